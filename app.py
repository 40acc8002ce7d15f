"""Start the comparison web app: `python app.py --help`."""

from __future__ import annotations

import sys

from llm_compare.errors import UserError
from llm_compare.app_flags import build_parser, check_flags, check_share_reachable


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        auth = check_flags(args)
        if args.share:
            check_share_reachable()
        from llm_compare.ui.from_flags import create_app  # Gradio import: after the cheap checks

        demo, launch_kwargs = create_app(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth or None,
        **launch_kwargs,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
