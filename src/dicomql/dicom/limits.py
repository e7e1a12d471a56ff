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

# One QIDO matching value (each UID of a UID list counts as one value). PS3.5 Table 6.2-1 caps the
# values searched: UI, LO and a person name's component group at 64 characters (a PN of three
# groups 194), SH and CS 16, a TM range 29. A value far beyond those can match only a malformed
# stored value and costs the index work (LIKE/GLOB patterns, fuzzy tokens), so it is refused;
# 1,024 leaves room for every legal value with wildcards.
MAX_QIDO_VALUE_CHARS = 1024

# UIDs in one QIDO UID-list value (``StudyInstanceUID=1.2\\1.3``, PS3.4 C.2.2.2.2): each becomes
# a bound parameter of an ``IN (…)`` list, so an unbounded list grows the statement (SQLite's
# default limit is 32,766 parameters) and its plan. Viewers ask for a page of studies at a time;
# 1,000 is a few pages of the largest default QIDO page (1,000 series or instances).
MAX_QIDO_UIDS = 1000

# The ``application/dicom+json`` parts of one STOW-RS metadata and bulk data request (PS3.18
# 10.5.1.4), together: json.loads needs each whole, and all stay parsed until the body ends
# (the bulk data they name comes after them). Parsed DICOM JSON takes about 8.6 times its size
# (16 MiB of headers: 138 MB of Python objects), so 16 MiB bounds a request near 140 MB while
# holding over a thousand instances' headers. Bulk data parts are spooled to disk instead.
MAX_JSON_METADATA_BYTES = 16 * 1024 * 1024
