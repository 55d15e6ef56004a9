"""Small corpora for the fault tests: a few images of the session's `demo_corpus`, copied
into ImageNet's layout under `dst`."""

from __future__ import annotations

import shutil


def tiny_corpus(demo_corpus, dst, classes=2, per_class=3):
    for wnid in sorted(p.name for p in (demo_corpus / "train").iterdir())[:classes]:
        (dst / "train" / wnid).mkdir(parents=True)
        for f in sorted((demo_corpus / "train" / wnid).iterdir())[:per_class]:
            shutil.copy(f, dst / "train" / wnid / f.name)
    return dst
