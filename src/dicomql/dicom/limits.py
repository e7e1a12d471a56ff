"""Every limit dicomql puts on what a request may make it parse, in one place (documented in
docs/reliability.md, "Limits")."""

from __future__ import annotations

# Sequences (SQ) nested inside one another. pydicom reads (and writes, and dicomql's JSON walker
# converts) a nested sequence by recursion, about five Python frames a level, so a file nested a
# few hundred deep exhausts the interpreter's stack. fo-dicom refuses beyond 256
# (fo-dicom PR #2114), a pydicom proposal beyond 100 (pydicom PR #2331); structured reports
# rarely nest beyond 10-20. 64 leaves room for every real file and for the deeper stacks of
# de-identification and transcoding.
MAX_SEQUENCE_DEPTH = 64

# The data set of a Deflated Explicit VR Little Endian instance (PS3.5 A.5) inflated: pydicom
# inflates it whole in memory, so a few hundred kilobytes could otherwise cost gigabytes.
MAX_INFLATED_BYTES = 64 * 1024 * 1024

# Name tokens of one QIDO ``fuzzymatching=true`` value: each becomes one indexed prefix lookup,
# and about 1,000 overflowed SQLite's expression tree (500) and slowed PostgreSQL super-linearly.
# A person name has at most 5 components in each of 3 groups (PS3.5 6.2.1); 32 leaves room for
# multi-word components.
MAX_FUZZY_TOKENS = 32
