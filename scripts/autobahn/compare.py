#!/usr/bin/env python3
"""Compare an Autobahn fuzzingclient run with the committed expectations.

Usage: compare.py INDEX_JSON EXPECTED_JSON [--update]

EXPECTED_JSON maps case id -> {"behavior": ..., "behaviorClose": ...} (the fields of
wstest's reports/index.json). As tungstenite does with its own results, a case fails
the comparison when it got WORSE than expected (OK > NON-STRICT > INFORMATIONAL >
UNIMPLEMENTED > anything else; for the close verdict OK/INFORMATIONAL > WRONG CODE /
FAILED BY CLIENT > FAILED / UNCLEAN), when an expected case did not run, or when any
case's behavior is FAILED. A case that got better, or a new case, is reported (so the
file can be refreshed with --update) but does not fail.

Exit status: 0 when nothing got worse, 1 otherwise, 2 on usage errors.
"""
import json
import sys

RANK = {"OK": 4, "NON-STRICT": 3, "INFORMATIONAL": 2, "UNIMPLEMENTED": 1}
CLOSE_RANK = {"OK": 2, "INFORMATIONAL": 2, "WRONG CODE": 1, "FAILED BY CLIENT": 1}


def case_key(case_id):
    return [int(x) if x.isdigit() else x for x in case_id.split(".")]


def load_results(index_path):
    with open(index_path, encoding="utf-8") as fh:
        index = json.load(fh)
    results = {}
    for agent_results in index.values():
        for cid, r in agent_results.items():
            results[cid] = {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
    return results


def main(argv):
    if len(argv) < 3 or len(argv) > 4 or (len(argv) == 4 and argv[3] != "--update"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    index_path, expected_path = argv[1], argv[2]
    results = load_results(index_path)
    if len(argv) == 4:
        with open(expected_path, "w", encoding="utf-8") as fh:
            json.dump({k: results[k] for k in sorted(results, key=case_key)}, fh, indent=1)
            fh.write("\n")
        print("compare: wrote %d cases to %s" % (len(results), expected_path))
        return 0
    with open(expected_path, encoding="utf-8") as fh:
        expected = json.load(fh)

    worse, better, missing, failed = [], [], [], []
    for cid in sorted(expected, key=case_key):
        exp = expected[cid]
        got = results.get(cid)
        if got is None:
            missing.append(cid)
            continue
        b_exp, b_got = RANK.get(exp["behavior"], 0), RANK.get(got["behavior"], 0)
        c_exp, c_got = CLOSE_RANK.get(exp["behaviorClose"], 0), CLOSE_RANK.get(got["behaviorClose"], 0)
        line = "%s: %s/%s -> %s/%s" % (cid, exp["behavior"], exp["behaviorClose"],
                                       got["behavior"], got["behaviorClose"])
        if b_got < b_exp or c_got < c_exp:
            worse.append(line)
        elif b_got > b_exp or c_got > c_exp:
            better.append(line)
    new = sorted(set(results) - set(expected), key=case_key)
    failed = [cid for cid in sorted(results, key=case_key) if results[cid]["behavior"] == "FAILED"]

    for title, items in (("WORSE than expected", worse), ("missing (expected but not run)", missing),
                         ("behavior FAILED", failed), ("better than expected", better),
                         ("new (not in expected.json)", new)):
        if items:
            print("compare: %s (%d):" % (title, len(items)))
            for it in items:
                print("   " + it)
    bad = len(worse) + len(missing) + len(failed)
    print("compare: %d cases checked against %s: %d worse, %d missing, %d FAILED, %d better, %d new"
          % (len(expected), expected_path.split("/")[-1], len(worse), len(missing), len(failed),
             len(better), len(new)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
