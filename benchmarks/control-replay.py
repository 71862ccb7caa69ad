#!/usr/bin/env python3
"""Would timing a fixed control child beside each check remove the drift between moments? A replay on side-by-side data.

    python3 benchmarks/control-replay.py FIRST_TSV SECOND_TSV CONTROL_LABEL      e.g. ... 2026-12-05.tsv 2026-12-05b.tsv A-g3

Reads two runs of `Puzzle.Benchmarks side-by-side` over the same children (minutes apart) and, for every child other than
CONTROL_LABEL, compares its ratio to the parent as measured ("raw") with that ratio over the control's in the same batch
("normalised": what a check would read if it scaled the control's ratio to a fixed reference). Printed: the median over
children of the per-batch coefficient of variation, of that of 3-batch medians (a 12-round check), and the mean and sd
over children of the shift between the two runs' medians. The drift between moments moves every child's ratio to the
parent alike, so the normalised shift is what would be left of it.
"""
import statistics as st
import sys


def batches(path):
    header, rows = None, []
    for line in open(path):
        if line.startswith('minute'):
            header = line.rstrip('\n').split('\t')[2:]
        elif header and line[:1].isdigit():
            rows.append([float(x) for x in line.rstrip('\n').split('\t')[2:]])
    return header, rows


def main(first, second, control):
    header, a_rows = batches(first)
    header_b, b_rows = batches(second)
    if header != header_b:
        sys.exit(f"{first} and {second} time different children")
    c = header.index(control)
    cv = lambda xs: st.stdev(xs) / st.mean(xs)
    def series(rows, i, norm):
        return [row[i] / (row[c] if norm else 1) for row in rows]
    def checks(rows, i, norm):
        s = series(rows, i, norm)
        return [st.median(s[k:k + 3]) for k in range(0, len(s) - 2, 3)]
    out = {}
    for norm in (False, True):
        batch_cv, check_cv, shift = [], [], []
        for i in range(len(header)):
            if i == c:
                continue
            a, b = series(a_rows, i, norm), series(b_rows, i, norm)
            batch_cv.append(cv(a + b))
            check_cv.append(cv(checks(a_rows, i, norm) + checks(b_rows, i, norm)))
            shift.append(st.median(b) / st.median(a) - 1)
        out[norm] = (st.median(batch_cv), st.median(check_cv), st.mean(shift), st.stdev(shift))
    print(f"{len(header) - 1} children, {len(a_rows)} + {len(b_rows)} batches; control {control}")
    for norm, name in ((False, 'raw (ratio to the parent)'), (True, 'normalised by the control')):
        bcv, ccv, m, s = out[norm]
        print(f"  {name}: per-batch cv {bcv:.3f}; 12-round check cv {ccv:.3f}; shift between the runs {m:+.3f} (sd {s:.3f})")


if __name__ == '__main__':
    main(*sys.argv[1:4])
