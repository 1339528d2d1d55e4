"""Data sources, schema validation, grouping and subsampling (offline, fast)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dialogtune.cli import main
from dialogtune.cli.common import add_data_args, data_config_from_args
from dialogtune.data import DataConfig, Record, data_fingerprint, load_records, read_records, subsample
from dialogtune.errors import ConfigError, DataError


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list[object]]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def row(i: int, **extra: object) -> dict[str, object]:
    return {
        "id": f"r{i}",
        "dialogue": f"#Person1#: hi {i}\n#Person2#: hello",
        "summary": f"greeting {i}",
        **extra,
    }


def assert_cli_error(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> str:
    """The CLI exits 2 with exactly one stderr line, no traceback, containing every fragment."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dialogtune: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    return err


# --- bad inputs: one test each, message names file, line and column ---------------------------

# name -> (file name, bytes, extra CLI args, expected fragments)
BAD_FILES: dict[str, tuple[str, bytes, list[str], list[str]]] = {
    "malformed-json-line": (
        "bad.jsonl",
        b'{"id": "a", "dialogue": "x", "summary": "y"}\n\n{"id": "b", "dialogue": \n',
        [],
        ["bad.jsonl:3:", "malformed JSON"],
    ),
    "json-not-an-object": (
        "list.jsonl",
        b'{"id": "a", "dialogue": "x"}\n[1, 2]\n',
        [],
        ["list.jsonl:2:", "expected a JSON object", "got list"],
    ),
    "missing-dialogue-column": (
        "validation.jsonl",
        b'{"id": "a", "text": "x", "summary": "y"}\n',
        [],
        ["validation.jsonl:1:", "no column 'dialogue'", "(found: id, text, summary)", "--dialogue-column"],
    ),
    "column-missing-on-later-line": (
        "later.jsonl",
        b'{"id": "a", "dialogue": "x"}\n{"id": "b", "dialogue": "y"}\n{"id": "c", "text": "z"}\n',
        [],
        ["later.jsonl:3:", "no column 'dialogue'", "found: id, text"],
    ),
    "renamed-summary-column": (
        "s.jsonl",
        b'{"id": "a", "dialogue": "x", "summary": "y"}\n',
        ["--summary-column", "reference"],
        ["s.jsonl:1:", "no column 'reference'", "--summary-column"],
    ),
    "csv-missing-column": (
        "x.csv",
        b"id,text\na,hello\n",
        [],
        ["x.csv:", "no column 'dialogue'", "(found: id, text)"],
    ),
    "empty-dialogue": (
        "e.jsonl",
        b'{"id": "a", "dialogue": "x"}\n{"id": "b", "dialogue": "  \\n "}\n',
        [],
        ["e.jsonl:2:", "column 'dialogue' is empty"],
    ),
    "dialogue-not-string": (
        "n.jsonl",
        b'{"id": "a", "dialogue": "x"}\n{"id": "b", "dialogue": 42}\n',
        [],
        ["n.jsonl:2:", "column 'dialogue' must be a string, got number"],
    ),
    "dialogue-null": (
        "null.jsonl",
        b'{"id": "a", "dialogue": null}\n',
        [],
        ["null.jsonl:1:", "column 'dialogue'", "got null"],
    ),
    "summaries-not-list-of-strings": (
        "m.jsonl",
        b'{"id": "a", "dialogue": "x", "summaries": ["ok", 3]}\n',
        [],
        ["m.jsonl:1:", "column 'summaries'", "list of strings", "item 2 is number"],
    ),
    "summary-not-string": (
        "t.jsonl",
        b'{"id": "a", "dialogue": "x", "summary": "y"}\n{"id": "b", "dialogue": "z", "summary": {"a": 1}}\n',
        [],
        ["t.jsonl:2:", "column 'summary'", "got object"],
    ),
    "id-wrong-type": (
        "i.jsonl",
        b'{"id": [1], "dialogue": "x"}\n',
        [],
        ["i.jsonl:1:", "column 'id' must be a string or an integer, got list"],
    ),
    "non-utf8-jsonl": (
        "latin.jsonl",
        b'{"id": "a", "dialogue": "x"}\n{"id": "b", "dialogue": "caf\xe9"}\n',
        [],
        ["latin.jsonl:2:", "not valid UTF-8", "0xe9"],
    ),
    "non-utf8-csv": (
        "latin.csv",
        b'id,dialogue\na,"hello\nthere"\nb,caf\xe9\n',
        [],
        ["latin.csv:4:", "not valid UTF-8"],
    ),
    "empty-file": ("empty.jsonl", b"", [], ["empty.jsonl", "empty file"]),
    "whitespace-only-file": ("blank.jsonl", b"\n  \n\n", [], ["blank.jsonl", "empty file"]),
    "csv-header-only": ("header.csv", b"id,dialogue,summary\n", [], ["header.csv", "empty file"]),
    "csv-wrong-field-count": (
        "fields.csv",
        b"id,dialogue,summary\na,x,y\nb,z\n",
        [],
        ["fields.csv:3:", "expected 3 fields, found 2"],
    ),
    "csv-line-after-multiline-field": (
        "multi.csv",
        b'id,dialogue,summary\na,"#Person1#: hi\n#Person2#: yo\n#Person1#: bye",s\nb,"   ",s\n',
        [],
        ["multi.csv:5:", "column 'dialogue' is empty"],
    ),
    "json-array-item-not-object": (
        "arr.json",
        b'[{"id": "a", "dialogue": "x"}, 7]',
        [],
        ["arr.json item 2", "number"],
    ),
    "unsupported-suffix": ("notes.txt", b"hello\n", [], ["notes.txt", "unsupported file type '.txt'"]),
    "corrupt-parquet": (
        "broken.parquet",
        b"not parquet at all",
        [],
        ["broken.parquet", "cannot read as parquet"],
    ),
    "duplicate-id": (
        "dup.jsonl",
        b'{"id": "a", "dialogue": "x"}\n{"id": "a", "dialogue": "y"}\n',
        [],
        ["dup.jsonl:2:", "duplicate id 'a'", "dup.jsonl:1"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_is_one_line_error(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, content, extra, fragments = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_records(path, summary_column=extra[1] if extra else None)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert_cli_error(capsys, ["data", "inspect", "--data", str(path), *extra], *fragments)


def test_parquet_errors_name_the_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = write_parquet(tmp_path / "p.parquet", {"id": ["a", "b"], "dialogue": ["x", " "]})
    assert_cli_error(
        capsys, ["data", "inspect", "--data", str(empty)], "p.parquet row 2", "'dialogue' is empty"
    )
    typed = write_parquet(tmp_path / "q.parquet", {"id": ["a"], "dialogue": [5]})
    assert_cli_error(capsys, ["data", "inspect", "--data", str(typed)], "q.parquet row 1", "got number")


def test_missing_file_and_directory_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_cli_error(
        capsys, ["data", "inspect", "--data", str(tmp_path / "nope.jsonl")], "nope.jsonl", "no such file"
    )
    assert_cli_error(capsys, ["data", "inspect", "--data", "./missing_dir"], "missing_dir", "no such file")
    assert_cli_error(capsys, ["data", "inspect", "--data", str(tmp_path)], "no data files")


def test_missing_split_lists_splits_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "train.jsonl", [row(0)])
    write_jsonl(tmp_path / "validation.jsonl", [row(0)])
    argv = ["data", "inspect", "--data", str(tmp_path), "--split", "test"]
    assert_cli_error(capsys, argv, "no split 'test'", "(found: train, validation)")


def test_hub_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import datasets

    calls = []

    def offline(source: str, **kwargs: object) -> None:
        calls.append((source, kwargs))
        raise ConnectionError("Couldn't reach 'owner/name' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr("dialogtune.hub.hub_reachable", lambda: True)  # the hub answers, the id fails
    assert_cli_error(
        capsys,
        ["data", "inspect", "--data", "owner/name", "--split", "test"],
        "could not load dataset 'owner/name' split 'test' from the Hugging Face hub",
        "Couldn't reach",
        "--data",
    )
    assert calls == [("owner/name", {"split": "test"})]  # no trust_remote_code, split passed through


def test_hub_rows_become_records(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    rows = [row(0), row(1)]
    fake = datasets.Dataset.from_list(rows)
    monkeypatch.setattr(datasets, "load_dataset", lambda source, split: fake)
    monkeypatch.setattr("dialogtune.hub.hub_reachable", lambda: True)
    records = read_records("knkarthick/dialogsum", "validation")
    assert [r.id for r in records] == ["r0", "r1"] and records[0].references == ("greeting 0",)


def test_require_references(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "gen.jsonl", [{"id": "a", "dialogue": "x"}])
    assert read_records(path)[0].references == ()  # fine for generation
    with pytest.raises(DataError, match=r"gen.jsonl: no reference column .*found: id, dialogue"):
        read_records(path, require_references=True)
    blank = write_jsonl(tmp_path / "blank.jsonl", [row(0), {"id": "b", "dialogue": "y", "summary": ""}])
    with pytest.raises(DataError, match=r"blank.jsonl:2: record 'b' has no reference summary"):
        read_records(blank, require_references=True)


# --- grouping, columns, formats ----------------------------------------------------------------


def hub_like_test_split(path: Path) -> Path:
    """The hub's test layout: three rows (one reference each) per dialogue, ids test_<n>_<k>."""
    rows = []
    for n in range(3):
        for k in range(1, 4):
            rows.append(
                {"id": f"test_{n}_{k}", "dialogue": f"dialogue {n}", "summary": f"s{n}.{k}", "topic": f"t{n}"}
            )
    return write_jsonl(path, rows)


def test_multi_reference_rows_are_grouped(tmp_path: Path) -> None:
    hub_like_test_split(tmp_path / "test.jsonl")
    records = read_records(tmp_path, "test")
    assert [r.id for r in records] == ["test_0", "test_1", "test_2"]
    assert records[1] == Record("test_1", "dialogue 1", ("s1.1", "s1.2", "s1.3"), "t1")
    flat = read_records(tmp_path, "test", group_by_dialogue=False)
    assert len(flat) == 9 and flat[0].id == "test_0_1" and flat[0].references == ("s0.1",)


def test_grouped_id_keeps_first_when_ids_do_not_share_a_base(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "g.jsonl",
        [
            {"id": "a_1", "dialogue": "same", "summary": "x"},
            {"id": "b_2", "dialogue": "same", "summary": "y"},
            {"id": "train_5", "dialogue": "copy", "summary": "p"},
            {"id": "train_900", "dialogue": "copy", "summary": "q"},  # same base, not numbered 1..k
            {"id": "solo_1", "dialogue": "alone", "summary": "z"},  # one row: id untouched
        ],
    )
    assert [(r.id, len(r.references)) for r in read_records(path)] == [
        ("a_1", 2),
        ("train_5", 2),
        ("solo_1", 1),
    ]


def test_summaries_list_column(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "multi.jsonl",
        [
            {"id": "a", "dialogue": "x", "summaries": ["one", "two", " "], "summary": "ignored"},
            {"id": "b", "dialogue": "y", "summaries": None, "summary": "ignored"},
        ],
    )
    records = read_records(path)
    assert records[0].references == ("one", "two") and records[1].references == ()
    assert read_records(path, summary_column="summary")[0].references == ("ignored",)


def test_csv_with_multiline_quoted_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        'id,dialogue,summary\n1,"#Person1#: hi\n#Person2#: ""yo""",greet\n2,plain,bye\n', encoding="utf-8"
    )
    records = read_records(path)
    assert records[0] == Record("1", '#Person1#: hi\n#Person2#: "yo"', ("greet",))
    assert records[1].id == "2"


def test_parquet_with_summaries_list(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "p.parquet",
        {"id": ["a", "b"], "dialogue": ["x", "y"], "summaries": [["s1", "s2"], ["s3"]]},
    )
    assert [r.references for r in read_records(path)] == [("s1", "s2"), ("s3",)]


def test_directory_formats_aliases_and_shards(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("id,dialogue,summary\na,x,y\n", encoding="utf-8")
    write_jsonl(tmp_path / "dev.jsonl", [row(0)])
    assert read_records(tmp_path, "train")[0].id == "a"
    assert read_records(tmp_path, "validation")[0].id == "r0"  # dev.jsonl counts as validation
    shards = tmp_path / "snapshot" / "data"
    shards.mkdir(parents=True)
    write_parquet(shards / "test-00000-of-00002.parquet", {"id": ["a"], "dialogue": ["x"]})
    write_parquet(shards / "test-00001-of-00002.parquet", {"id": ["b"], "dialogue": ["y"]})
    assert [r.id for r in read_records(tmp_path / "snapshot", "test")] == ["a", "b"]


def test_synthesized_ids_bom_and_integer_ids(tmp_path: Path) -> None:
    path = tmp_path / "noid.jsonl"
    path.write_text('\ufeff{"dialogue": "x"}\n{"dialogue": "y"}\n', encoding="utf-8")
    assert [r.id for r in read_records(path, "train")] == ["train_0", "train_1"]
    assert read_records(write_jsonl(tmp_path / "int.jsonl", [{"id": 7, "dialogue": "x"}]))[0].id == "7"


# --- config, subsampling, fingerprint, CLI helpers ---------------------------------------------


def test_subsample_order_every_then_sample_then_limit() -> None:
    items = list(range(20))
    assert subsample(items, every=5) == [0, 5, 10, 15]
    assert subsample(items, every=2, limit=3) == [0, 2, 4]
    sampled = subsample(items, sample=5, seed=1)
    assert sampled == sorted(sampled) and len(sampled) == 5  # original order kept
    assert sampled == subsample(items, sample=5, seed=1)  # reproducible
    assert sampled != subsample(items, sample=5, seed=2)
    both = subsample(items, every=2, sample=4, seed=3, limit=2)
    assert both == subsample(subsample(items, every=2), sample=4, seed=3)[:2]
    assert subsample(items, sample=50) == items and subsample(items, limit=50) == items


def test_load_records_applies_config(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "validation.jsonl", [row(i) for i in range(10)])
    records = load_records(DataConfig(source=str(tmp_path), every=3, limit=3))
    assert [r.id for r in records] == ["r0", "r3", "r6"]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"limit": 0}, "data.limit"),
        ({"every": True}, "data.every"),
        ({"sample": -1}, "data.sample"),
        ({"source": " "}, "data.source"),
        ({"seed": "1"}, "data.seed"),
        ({"summary_column": ""}, "data.summary_column"),
    ],
)
def test_data_config_validation_names_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        DataConfig(**kwargs)  # type: ignore[arg-type]


def test_data_config_dict_roundtrip() -> None:
    config = DataConfig(source="dir", split="train", every=100, seed=3)
    assert DataConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown key data.limt"):
        DataConfig.from_dict({"limt": 3})


def test_data_fingerprint() -> None:
    a = [Record("1", "x", ("a", "b"))]
    assert data_fingerprint(a) == data_fingerprint([Record("1", "x", ("a", "b"))])
    assert data_fingerprint(a) != data_fingerprint([Record("1", "x", ("a b",))])
    assert data_fingerprint(a) != data_fingerprint([Record("2", "x", ("a", "b"))])


def test_cli_data_args_build_config() -> None:
    parser = argparse.ArgumentParser()
    add_data_args(parser, default_split="test")
    args = parser.parse_args(["--data", "d", "--every", "100", "--sample", "5", "--summary-column", "s"])
    assert data_config_from_args(args) == DataConfig(
        source="d", split="test", every=100, sample=5, summary_column="s"
    )
    assert data_config_from_args(parser.parse_args([])) == DataConfig(split="test")
    with pytest.raises(SystemExit):
        parser.parse_args(["--limit", "0"])


def test_real_dialogsum(dialogsum_dir: Path) -> None:
    validation = read_records(dialogsum_dir, "validation", require_references=True)
    assert len(validation) == 500 and validation[0].id == "dev_0"
    assert all(len(r.references) == 1 for r in validation)
    assert len(read_records(dialogsum_dir, "train")) == 12460
    assert len(load_records(DataConfig(source=str(dialogsum_dir), every=100))) == 5
