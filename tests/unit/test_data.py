"""GSM8K loading, prompt and subsets: `pytest tests/unit/test_data.py`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import data

HERE = Path(__file__).resolve().parents[2]


def test_load_from_a_directory_gives_the_columns(gsm8k_dir: Path) -> None:
    ds = data.load_gsm8k("train", source=gsm8k_dir)
    assert tuple(ds.column_names) == data.COLUMNS
    assert ds["id"] == [f"train-{i:05d}" for i in range(5)]
    assert ds["gold"] == ["72", "10", "3600", "-8", "12"]  # commas and signs normalized
    assert ds["n_steps"] == [2, 2, 1, 1, 1]


def test_gsm8k_dir_env_is_the_second_route(gsm8k_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GSM8K_DIR", str(gsm8k_dir))
    assert len(data.load_gsm8k("test")) == 5


def test_shipped_copy_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GSM8K_DIR", raising=False)
    assert data.resolve_source(None) == data.SHIPPED_DIR
    assert len(data.load_gsm8k("test")) == 1319


def test_shipped_checksums_match_the_data_readme() -> None:
    readme = (HERE / "data" / "README.md").read_text()
    sums = (data.SHIPPED_DIR / "SHA256SUMS").read_text()
    for name, digest in data.SHIPPED_SHA256.items():
        assert digest in readme and f"{digest}  {name}" in sums
        assert data.sha256_of(data.SHIPPED_DIR / name) == digest


def test_an_edited_shipped_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    edited = tmp_path / "test.jsonl"
    edited.write_text((data.SHIPPED_DIR / "test.jsonl").read_text().replace("72", "73", 1))
    monkeypatch.setattr(data, "SHIPPED_DIR", tmp_path)
    with pytest.raises(ValueError, match="test.jsonl is corrupted or edited"):
        data.load_gsm8k("test", source=tmp_path)


def test_missing_source_names_the_routes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GSM8K_DIR"):
        data.load_gsm8k("train", source=tmp_path)


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="Unknown GSM8K split 'dev'"):
        data.load_gsm8k("dev")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "q?"}, "row train-00001 has no text in field 'answer'"),  # missing column
        ({"question": "q?", "answer": "it is 5"}, "row train-00001 field 'answer' has no '#### <number>'"),
        ({"answer": "#### 5"}, "row train-00001 has no text in field 'question'"),
    ],
)
def test_malformed_rows_name_the_row_and_field(tmp_path: Path, row: dict, message: str) -> None:
    good = {"question": "q", "answer": "#### 1"}
    (tmp_path / "train.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=message):
        data.load_gsm8k("train", source=tmp_path)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"train-00000 \(line 1\) is not valid JSON"):
        data.load_gsm8k("train", source=tmp_path)


def test_hub_route_without_network_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        assert args[:2] == ("openai/gsm8k", "main")
        raise ConnectionError("no route to host")

    monkeypatch.setattr(data.datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="openai/gsm8k.*no route to host.*Routes"):
        data.load_gsm8k("test", source="hub")


def test_build_messages_holds_the_system_prompt() -> None:
    messages = data.build_messages("What is 2+2?")
    assert messages[0] == {"role": "system", "content": data.SYSTEM_PROMPT}
    assert messages[1] == {"role": "user", "content": "What is 2+2?"}
    assert "'#### <number>'" in data.SYSTEM_PROMPT


def test_select_is_deterministic_and_easiest_first(gsm8k_dir: Path) -> None:
    ds = data.load_gsm8k("train", source=gsm8k_dir)
    assert data.select(ds, 3, seed=1)["id"] == data.select(ds, 3, seed=1)["id"]
    assert data.select(ds, 3, seed=1)["id"] != data.select(ds, 3, seed=2)["id"] or len(ds) < 3
    easiest = data.select(ds, 2, seed=0, easiest_first=True)
    assert easiest["n_steps"] == [1, 1] and easiest["id"] == ["train-00004", "train-00003"]  # shorter first
    assert len(data.select(ds, None, seed=0)) == 5
    with pytest.raises(ValueError, match="n=6 rows of a data set with 5"):
        data.select(ds, 6, seed=0)


def test_every_gsm8k_gold_solution_grades_correct_against_its_own_answer() -> None:
    from helpers import answers

    rows = list(data.load_gsm8k("train", source=data.SHIPPED_DIR)) + list(data.load_gsm8k("test"))
    assert len(rows) == 8792
    wrong = [r["id"] for r in rows if not answers.grade(r["answer"], r["gold"]).strict_correct]
    wrong += [r["id"] for r in rows if not answers.grade(r["answer"], r["gold"]).lenient_correct]
    assert wrong == []
    # and the strict reader agrees with the raw `#### ` line of every solution
    assert all(answers.normalize_number(r["answer"].rsplit("#### ", 1)[1]) == r["gold"] for r in rows)


def test_make_arithmetic_is_deterministic_disjoint_and_self_consistent() -> None:
    from helpers import answers

    train, test = (
        data.make_arithmetic(200, seed=0, split="train"),
        data.make_arithmetic(60, seed=0, split="test"),
    )
    assert train["question"] == data.make_arithmetic(200, seed=0, split="train")["question"]
    assert tuple(train.column_names) == data.COLUMNS
    assert not set(train["question"]) & set(test["question"])
    assert not set(train["question"]) & set(data.make_arithmetic(60, seed=1, split="test")["question"])
    assert len(set(train["question"])) == 200
    assert all(answers.grade(r["answer"], r["gold"]).strict_correct for r in list(train) + list(test))
    assert set(train["n_steps"]) == {1, 2, 3}
    assert data.make_arithmetic(5, seed=0, split="train")["question"] == train["question"][:5]


def test_make_arithmetic_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        data.make_arithmetic(3, seed=0, split="dev")
    with pytest.raises(ValueError, match="n=0"):
        data.make_arithmetic(0, seed=0, split="train")
