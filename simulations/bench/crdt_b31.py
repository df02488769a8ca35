#!/usr/bin/env python3
"""crdt-benchmarks B3.1 for the anchors: 20*floor(sqrt(6000)) = 1540 writers each set the key "v"
of one shared map to their own number; all updates are merged into one fresh document.

Each library merges through its fastest API (Loro `import_batch`, Yrs `merge_updates` then one
`apply_update`). Prints one JSON object: per library, the median time of the whole task (create the writers, set,
export each update, merge all into one document), the merge-only time, the summed update size and
the merged document's encoded size. `gquic-bench state` runs this beside its own implementation.
"""
import json
import statistics
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1540
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 7


def run_loro():
    from loro import LoroDoc, ExportMode, VersionVector
    t0 = time.perf_counter()
    updates = []
    for i in range(N):
        doc = LoroDoc()
        doc.peer_id = i + 1
        doc.get_map("map").insert("v", i)
        doc.commit()
        updates.append(doc.export(ExportMode.Updates(VersionVector())))
    t1 = time.perf_counter()
    merged = LoroDoc()
    merged.import_batch(updates)  # Loro's fastest path; one import_ per update is quadratic
    t2 = time.perf_counter()
    size = len(merged.export(ExportMode.Snapshot()))
    return t2 - t0, t2 - t1, sum(len(u) for u in updates), size


def run_pycrdt():
    from pycrdt import Doc, Map, merge_updates
    t0 = time.perf_counter()
    updates = []
    for i in range(N):
        doc = Doc(client_id=i + 1)
        m = doc.get("map", type=Map)
        m["v"] = i
        updates.append(doc.get_update())
    t1 = time.perf_counter()
    merged = Doc()
    merged.get("map", type=Map)
    merged.apply_update(merge_updates(*updates))  # Yrs' fastest path (one apply per update is slower)
    t2 = time.perf_counter()
    size = len(merged.get_update())
    return t2 - t0, t2 - t1, sum(len(u) for u in updates), size


def measure(fn):
    fn()  # warm-up
    runs = [fn() for _ in range(RUNS)]
    return {
        "time_ms": statistics.median(r[0] for r in runs) * 1e3,
        "merge_ms": statistics.median(r[1] for r in runs) * 1e3,
        "update_bytes": runs[0][2],
        "doc_bytes": runs[0][3],
    }


if __name__ == "__main__":
    print(json.dumps({"writers": N, "loro": measure(run_loro), "yrs": measure(run_pycrdt)}))
