from llm_compare.cli import main

raise SystemExit(main())
