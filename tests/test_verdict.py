"""Style control, categories, votes still needed and judge agreement on planted synthetic battles."""

import numpy as np
import pytest

from llm_compare.style import style_counts, style_matrix
from llm_compare.verdict import (Z95, agreement, categories, group_of, in_category, language_of, needed_votes,
                                 style_lines, verdict)


def battle(i, a, b, winner, text_a="answer", text_b="answer", prompt="question", **extra):
    return {"battle_id": i, "model_a": a, "model_b": b, "winner": winner, "anony": True, "self_identified": False,
            "tstamp": float(i), "judge": "anonymous", "language": extra.pop("language", "English"),
            "conversation_a": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text_a}],
            "conversation_b": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text_b}],
            **extra}


def planted(n, seed, *, longer_wins=None, x_wins=None, x_longer=0.8):
    """Battles of X vs Y. longer_wins: the longer answer wins with this probability (X is usually the
    longer one); x_wins: X wins with this probability and both models' lengths come from one distribution."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if longer_wins is not None:
            long_, short = int(rng.integers(400, 900)), int(rng.integers(50, 350))
            x_len, y_len = (long_, short) if rng.random() < x_longer else (short, long_)
            x_won = (x_len > y_len) == (rng.random() < longer_wins)
        else:
            x_len, y_len = (int(v) for v in rng.integers(50, 900, 2))
            x_won = rng.random() < x_wins
        x_first = rng.random() < 0.5
        a, b = ("X", "Y") if x_first else ("Y", "X")
        la, lb = (x_len, y_len) if x_first else (y_len, x_len)
        winner = "model_a" if x_won == x_first else "model_b"
        out.append(battle(i, a, b, winner, "w" * la, "w" * lb))
    return out


def difference_interval(v):
    samples = v.style.samples[:, v.board.models.index("X")] - v.style.samples[:, v.board.models.index("Y")]
    return np.percentile(samples, [2.5, 97.5])


def test_style_control_removes_a_length_advantage():
    v = verdict(planted(600, 1, longer_wins=0.75), rounds=100)
    plain = v.gaps[0]
    assert plain.separated and plain.better == "X"  # X writes longer answers and wins on that alone
    low, high = difference_interval(v)
    assert low < 0 < high  # held out, the length leaves no difference between the models
    assert v.style.coefficient_intervals["length"][0] > 0  # and length is what moved the votes


def test_style_control_keeps_a_real_difference():
    v = verdict(planted(300, 2, x_wins=0.7), rounds=100)
    assert v.gaps[0].separated and v.gaps[0].better == "X"
    low, high = difference_interval(v)
    assert low > 0
    c_low, c_high = v.style.coefficient_intervals["length"]
    assert c_low < 0 < c_high  # length did not decide these votes


def test_style_counts_read_markdown():
    text = "# Title\n\nSome **bold** and __more__.\n\n- one\n- two\n1. three\n## Sub\n"
    assert style_counts(text) == (len(text), 2, 3, 2)
    assert style_counts("plain") == (5, 0, 0, 0)


def test_style_matrix_is_standardised_and_zero_when_both_lack_a_feature():
    records = [battle(i, "X", "Y", "tie", "a" * (i + 1), "b" * 10) for i in range(20)]
    x = style_matrix(records)
    assert x.shape == (20, 4)
    assert abs(x[:, 0].mean()) < 1e-9 and abs(x[:, 0].std() - 1) < 1e-9
    assert not x[:, 1:].any()  # no headers, lists or bold anywhere
    v = verdict(records, rounds=100)
    assert v.style.absent == ("headers", "lists", "bold")
    assert style_lines(v.style)[1] == "headers: no answer differs in it" and style_lines(v.style)[0].startswith("length: ")


def simulated_median(p, tie_rate, runs=4000, horizon=400, seed=0):
    """Median over simulated vote sequences of the count at which the 95% interval excludes zero:
    the smallest count at which at least half the simulated intervals exclude it."""
    rng = np.random.default_rng(seed)
    win = p - tie_rate / 2
    u = rng.random((runs, horizon))
    scores = np.where(u < win, 1.0, np.where(u < win + tie_rate, 0.5, 0.0))
    n = np.arange(1, horizon + 1)
    mean = np.cumsum(scores, axis=1) / n
    excluded = np.abs(mean - 0.5) > Z95 * np.sqrt((1 - tie_rate) / 4 / n)
    return int(n[np.argmax(excluded.mean(axis=0) >= 0.5)])


@pytest.mark.parametrize("p, tie_rate", [(0.6, 0.0), (0.7, 0.0), (0.6, 0.2), (0.7, 0.2)])
def test_votes_needed_matches_simulation(p, tie_rate):
    predicted = needed_votes(p, tie_rate, have=0)
    simulated = simulated_median(p, tie_rate)
    assert abs(predicted - simulated) <= 0.25 * simulated, (predicted, simulated)


def test_votes_needed_counts_votes_already_cast_and_no_difference():
    assert needed_votes(0.6, 0.0, have=50) == needed_votes(0.6, 0.0, have=0) - 50
    assert needed_votes(0.5, 0.1, have=10) is None


def test_board_reports_separated_and_still_needed_pairs():
    rng = np.random.default_rng(3)
    records = [battle(i, "X", "Y", "model_a" if rng.random() < 0.85 else "model_b") for i in range(80)]
    records += [battle(80 + i, "Y", "Z", "model_a" if rng.random() < 0.55 else "model_b") for i in range(20)]
    v = verdict(records, rounds=100)
    gaps = {(g.better, g.worse): g for g in v.gaps}
    assert gaps[("X", "Y")].separated and gaps[("X", "Y")].needed == 0
    close = gaps[("Y", "Z")]
    assert not close.separated and close.needed > 0 and close.battles == 20
    data = v.to_dict()
    assert {"separated", "needed", "ci_low", "ci_high"} <= set(data["adjacent"][0])


def test_categories_by_language_group_and_voter():
    records = [battle(1, "X", "Y", "model_a", prompt="什么是量子计算？请简单说明", language="Chinese"),
               battle(2, "X", "Y", "model_b", prompt="What is a qubit?", source="batch", question_id="seeds/qubit"),
               battle(3, "X", "Y", "tie", prompt="12345", language="unknown"),
               battle(4, "X", "Y", "model_a", prompt="Tell me a joke", judge="judge:j1")]
    assert [language_of(r) for r in records] == ["Chinese", "English", "other", "English"]
    assert group_of(records[1]) == "seeds" and group_of(records[0]) is None
    assert group_of(records[3], {"Tell me a joke": "fun"}) == "fun"
    cats = categories(records, {"Tell me a joke": "fun"})
    assert cats == ["all", "language:Chinese", "language:English", "language:other", "group:fun", "group:seeds"]
    assert [r["battle_id"] for r in in_category(records, "language:Chinese")] == [1]
    human = verdict(records, category="all", rounds=100)
    assert human.board.battles == 3  # the judge's verdict stays out of the human board
    judged = verdict(records, voters="judge:j1", rounds=100)
    assert judged.board.battles == 1


def test_agreement_counts_only_battles_with_both_votes():
    human = [battle(1, "X", "Y", "model_a"), battle(2, "X", "Y", "model_b"), battle(3, "X", "Y", "tie")]
    judged = [battle(1, "X", "Y", "model_a", judge="judge:j"), battle(2, "X", "Y", "model_a", judge="judge:j"),
              battle(5, "X", "Y", "model_a", judge="judge:j")]
    assert agreement(human, judged) == {"j": {"battles": 2, "agree": 1, "rate": 0.5}}


def stored(tmp_path, n=60, seed=5):
    """A vote database: X beats Y 3 times in 4; a third of the prompts Chinese; one judge verdict per battle."""
    from llm_compare.store import VoteStore

    rng = np.random.default_rng(seed)
    path = tmp_path / "v.db"
    with VoteStore(path) as store:
        for i in range(n):
            chinese = i % 3 == 0
            prompt = f"问题{i}：请解释一下" if chinese else f"Question {i}: please explain"
            a, b = ("X", "Y") if i % 2 else ("Y", "X")
            bid = store.record_battle(prompt=prompt, model_a=a, model_b=b, answer_a="**A** " * (i % 5),
                                      answer_b="- b\n" * (i % 4), anony=True, source="batch",
                                      question_id=f"{'zh' if chinese else 'en'}-suite/p{i}", versions={})
            x_wins = rng.random() < 0.75
            store.record_vote(bid, "a" if x_wins == (a == "X") else "b")
            store.record_judge_vote(bid, "a" if i % 4 else "tie", "tiny-judge", {"as_stored": "A"})
    return path


def test_leaderboard_command_json_has_style_gaps_categories_and_agreement(tmp_path, capsys):
    import json

    from llm_compare.cli import main

    path = stored(tmp_path)
    assert main(["leaderboard", "--db", str(path), "--json", "--rounds", "100"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["voters"] == "human" and data["battles"] == 60
    assert {"style_rating", "style_ci_low", "style_ci_high"} <= set(data["rows"][0])
    assert set(data["style"]["coefficients"]) == {"length", "headers", "lists", "bold"}
    assert data["adjacent"][0]["better"] == "X" and "needed" in data["adjacent"][0]
    assert "language:Chinese" in data["categories"] and "group:zh-suite" in data["categories"]
    assert data["judge_agreement"]["tiny-judge"]["battles"] == 60
    assert main(["leaderboard", "--db", str(path), "--json", "--rounds", "100", "--category", "language:Chinese"]) == 0
    assert json.loads(capsys.readouterr().out)["battles"] == 20
    assert main(["leaderboard", "--db", str(path), "--json", "--rounds", "100", "--voters", "judge:tiny-judge"]) == 0
    judged = json.loads(capsys.readouterr().out)
    assert judged["battles"] == 60 and judged["voters"] == "judge:tiny-judge"
    assert main(["leaderboard", "--db", str(path), "--rounds", "100", "--category", "group:zh-suite"]) == 0
    out = capsys.readouterr().out
    assert "style coefficients" in out and "adjacent models" in out and "category group:zh-suite" in out
    assert main(["leaderboard", "--db", str(path), "--voters", "judge:nobody"]) == 2
    assert "judge:tiny-judge" in capsys.readouterr().err
