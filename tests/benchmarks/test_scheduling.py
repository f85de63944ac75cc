"""benchmarks/scheduling.py and benchmarks/cluster_projection.py on small sizes: every unit is claimed
exactly once by competing workers, merges count what they append, and the projection's units add up."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scheduling_claims_each_unit_once_and_merges_what_is_new(tmp_path):
    out = tmp_path / "scheduling.json"
    argv = [str(ROOT / "benchmarks" / "scheduling.py"), "--units", "60", "--workers", "1", "3", "--cells", "64"]
    subprocess.run([sys.executable, *argv, "--shards", "4", "--out", str(out)], check=True, capture_output=True)
    data = json.loads(out.read_text())  # the script asserts the counts; here what it reports
    assert [c["workers"] for c in data["claims"]] == [1, 3] and all(c["claims_per_s"] > 0 for c in data["claims"])
    assert data["merge"]["cells"] == 64 and data["merge"]["merge_first_s"] > 0


def test_the_projection_packs_every_unit():
    spec = importlib.util.spec_from_file_location("cluster_projection", ROOT / "benchmarks" / "cluster_projection.py")
    projection = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(projection)
    groups, longest, naive = projection.units(docs=2, per_document=False)
    documents, _, _ = projection.units(docs=2, per_document=True)
    assert len(groups) == len(projection.MIXES) * len(projection.ROPES) and len(documents) == 2 * len(groups)
    assert abs(sum(groups) - sum(documents)) < 1e-6 * sum(groups) < naive  # a pass serves several lengths
    assert longest == max(projection.LENGTHS)
    assert projection.makespan([3.0, 2.0, 2.0, 1.0], 2) == 4.0  # longest first: 3+1 and 2+2
