"""data.specs: the one parser of dataset specs, for eval and training alike."""

from __future__ import annotations

import pytest

from data.jsonl import load_jsonl, save_jsonl
from data.schema import DatasetError
from data.specs import load_spec
from data.synthetic import generate, generate_dataset


def test_synthetic_and_combinations(tmp_path):
    assert load_spec("synthetic:3:2") == generate_dataset(3, seed=2)
    assert load_spec("synthetic") == generate_dataset(1, seed=0)
    path = tmp_path / "mine.jsonl"
    save_jsonl([generate(5)], path)
    both = load_spec(f"synthetic:2:1+{path}")
    assert [c.sample_id for c in both] == ["synthetic-100003", "synthetic-100004", "synthetic-5"]
    assert not {c.sample_id for c in load_spec("synthetic:4:1")} & {c.sample_id for c in load_spec("synthetic:4:2")}


@pytest.mark.parametrize("spec, message", [
    ("synthetic:x", "integers"), ("synthetic:0", "n >= 1"), ("synthetic:1:2:3", "n >= 1"),
    ("locomo:nope", "unknown LoCoMo split"), ("no/such/file.json", "no such file"), ("", "empty"),
    ("synthetic:1+", "empty part"), ("synthetic:1:1+synthetic:1:1", "twice"),
])
def test_bad_specs_are_one_clear_error(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_spec(spec)


def test_split_only_for_locomo(tmp_path):
    path = tmp_path / "x.jsonl"
    save_jsonl([generate(1)], path)
    with pytest.raises(DatasetError, match="--split"):
        load_spec(str(path), split="dev")
    for spec in ("synthetic:2:1", "locomo:val", "synthetic:1+locomo:val"):  # a split that would be ignored
        with pytest.raises(DatasetError, match="split"):
            load_spec(spec, split="train")
    named = tmp_path / "synthetic_val.jsonl"  # a file whose name starts like a generator spec
    save_jsonl([generate(9)], named)
    assert [c.sample_id for c in load_spec(str(named))] == ["synthetic-9"]


def test_jsonl_keeps_edits_and_superseded_values(tmp_path):
    conv = generate(4)
    path = tmp_path / "c.jsonl"
    save_jsonl([conv], path)
    (back,) = load_jsonl(path)
    assert back == conv and back.edits and any(q.superseded_values for q in back.qa)


@pytest.mark.parametrize("edit, message", [
    ({"op": "UPDATE", "target": "D1:1"}, "needs its text"),
    ({"op": "DELETE"}, "needs the target"),
])
def test_an_incomplete_edit_names_its_line(tmp_path, edit, message):
    path = tmp_path / "c.jsonl"
    save_jsonl([generate(4)], path)
    lines = path.read_text().splitlines()
    lines.append(__import__("json").dumps({"type": "edit", "sample_id": "synthetic-4", "dia_id": "D1:1", **edit}))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message) as err:
        load_jsonl(path)
    assert f"line {len(lines)}:" in str(err.value)
