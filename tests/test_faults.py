"""The fault-injection and fuzz suite (``make reliability``, ``python -m reliability``) at the test suite's size:
every category must end with zero failures. The full sizes (1000 recipe mutations, 20 kills, 20 server restarts …) run with
``make reliability`` and are published in docs/reliability.md."""
import pytest

from reliability import SIZES, run_suite, write_report

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Detected pickle protocol")]  # the security case's payload file

EXPECTED_CASES = {"recipes": 300, "frames": 300, "process": 3, "remote": 8, "storage": 5, "limits": 100,
                  "security": 25, "trust": 30}


@pytest.mark.parametrize("category", sorted(EXPECTED_CASES))
def test_fault_category_has_no_failures(category, tmp_path):
    (result,) = run_suite(tmp_path, "quick", only={category})
    assert result.cases >= EXPECTED_CASES[category], result.row()
    assert result.failures == [], "\n".join(result.failures[:20])


def test_report_lists_every_category(tmp_path):
    from reliability.result import Result

    results = [Result(name, cases=3, detail="x") for name in EXPECTED_CASES]
    results[0].fail("an example failure")
    text = write_report(results, tmp_path, "python -m reliability").read_text()
    for name in EXPECTED_CASES:
        assert f"| {name} | 3 |" in text
    assert "an example failure" in text and "Found by this suite" in text
    assert SIZES["full"]["recipes"] >= 1000 and SIZES["full"]["kills"] >= 20 and SIZES["full"]["restarts"] >= 20
