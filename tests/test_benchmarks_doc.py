"""BENCHMARKS.md cites only results that exist, each with the date its JSON records."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "BENCHMARKS.md"

# A results file is cited by its name (`bench_losses.json`, or `results/bench_eval.json`).
JSON_NAME = re.compile(r"[\w.-]+\.json")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def cited_results(text: str) -> set[str]:
    return set(JSON_NAME.findall(text))


def dated_rows(text: str) -> list[tuple[str, str, str]]:
    """(row, date, JSON name) for every table row that has a date cell and cites a JSON."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        dates = [cell for cell in cells if DATE.fullmatch(cell)]
        names = [name for cell in cells for name in JSON_NAME.findall(cell)]
        if dates and names:
            rows.append((line, dates[-1], names[-1]))
    return rows


def test_every_cited_results_file_exists():
    cited = cited_results(DOC.read_text(encoding="utf-8"))
    assert cited, "BENCHMARKS.md cites no results file"
    missing = sorted(name for name in cited if not (RESULTS / name).is_file())
    assert missing == [], f"BENCHMARKS.md cites files missing from benchmarks/results: {missing}"


def test_every_row_date_is_the_date_its_json_records():
    rows = dated_rows(DOC.read_text(encoding="utf-8"))
    assert rows, "BENCHMARKS.md has no table row with a date and a JSON"
    wrong = []
    for line, date, name in rows:
        if not (RESULTS / name).is_file():
            continue  # reported by the test above
        recorded = json.loads((RESULTS / name).read_text(encoding="utf-8"))["machine"]["date"]
        if not recorded.startswith(date):
            wrong.append(f"{name}: row says {date}, JSON says {recorded[:10]}: {line[:60]}")
    assert wrong == [], "\n".join(wrong)


def test_the_parsers_find_a_cited_name_and_a_row_date():
    text = "see `results/bench_eval.json`\n| case | 2026-12-06 | `bench_eval.json` |\n"
    assert cited_results(text) == {"bench_eval.json"}
    assert dated_rows(text) == [(text.splitlines()[1], "2026-12-06", "bench_eval.json")]
