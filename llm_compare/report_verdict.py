"""A batch report judged: a judge model votes on the report's stored battles, and the report gets a
"Judge verdict" section (ratings plain and style-controlled, style coefficients, votes still
needed, and the same per prompt language). Everything shown is escaped: model names, the judge's
name and the categories are untrusted text like the answers.
"""

from __future__ import annotations

from llm_compare.judge import run_judge
from llm_compare.judge_local import make_judge
from llm_compare.markup import esc, md_cell
from llm_compare.verdict import LANGUAGES, Verdict, gap_line, style_lines, verdict


def judge_report(report, store, pool, judge_spec, progress=None, decode: bool = False):
    """Judge this report's stored battles (skipping judged ones); returns the JudgeRun and adds the
    verdict section to `report.extra_sections`."""
    ids = [r.battle_id for r in report.results if r.battle_id is not None]
    judge = make_judge(pool.get(judge_spec), decode=decode)
    done = store.judged_ids(judge.name)
    battles = [store.get_battle(i) for i in ids if i not in done]
    run = run_judge(store, judge, battles, skipped=len(ids) - len(battles), progress=progress)
    records = [r for r in store.judge_records(judge.name) if r["battle_id"] in set(ids)]
    report.extra_sections.append(verdict_sections(records, judge.name, run.errors))
    return run


def _verdicts(records: list[dict], voters: str) -> list[tuple[str, Verdict]]:
    out = [("all prompts", verdict(records, voters=voters, blind_only=False, rounds=100))]
    for lang in LANGUAGES:
        v = verdict(records, voters=voters, category=f"language:{lang}", blind_only=False, rounds=100)
        if v.board.battles and v.board.battles < out[0][1].board.battles:
            out.append((f"{lang} prompts", v))
    return out


def verdict_sections(records: list[dict], judge_name: str, errors: list) -> tuple[str, str]:
    """(Markdown, HTML) of the "Judge verdict" section."""
    parts = _verdicts(records, f"judge:{judge_name}") if records else []
    intro = (f"{len(records)} battles judged by {judge_name} in both answer orders (disagreeing orders count as a "
             f"tie){f'; {len(errors)} could not be judged' if errors else ''}. Style-controlled: the rating with "
             "answer length, headers, lists and bold held out.")
    md = ["## Judge verdict", "", md_cell(intro)]
    page = [f"<section id='judge-verdict'><h2>Judge verdict</h2><p>{esc(intro)}</p>"]
    for title, v in parts:
        md += ["", f"### {md_cell(title)}", "", "| model | rating | 95% CI | style-controlled | 95% CI | W / T / L |",
               "|---|---|---|---|---|---|"]
        page.append(f"<h3>{esc(title)}</h3><table><tr><th>model</th><th>rating</th><th>95% CI</th>"
                    "<th>style-controlled</th><th>95% CI</th><th>W / T / L</th></tr>")
        for r in v.board.rows:
            cells = [r.model, f"{r.rating:.0f}", f"{r.ci_low:.0f}–{r.ci_high:.0f}", f"{v.style.ratings[r.model]:.0f}",
                     "{:.0f}–{:.0f}".format(*v.style.intervals[r.model]), f"{r.wins} / {r.ties} / {r.losses}"]
            md.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
            page.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        page.append("</table>")
        notes = [gap_line(g) for g in v.gaps] + ["style coefficients: " + "; ".join(style_lines(v.style))]
        md += [""] + [f"- {md_cell(n)}" for n in notes]
        page.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    if errors:
        md += ["", "Not judged:"] + [f"- battle {bid}: {md_cell(msg)}" for bid, msg in errors]
        page.append("<p>Not judged:</p><ul>" + "".join(f"<li>battle {bid}: {esc(msg)}</li>" for bid, msg in errors)
                    + "</ul>")
    page.append("</section>")
    return "\n".join(md) + "\n", "".join(page)


def verdict_status(run) -> str:
    """One line for the Report tab and the CLI: how the judging went."""
    text = f"judged {len(run.judged)} battles"
    if run.skipped:
        text += f" ({run.skipped} judged before)"
    if run.errors:
        text += f", {len(run.errors)} failed"
    return text
