"""The search modes, in one place: the CLI's choices, `search()`, `eval` and the printing read this.

Adding a mode is one entry here and one named query `<name>_search.sql` beside this file taking the
parameters that `search()` binds (query, k, since, until, source, doc, per_doc, plus vector when the
mode embeds and depth when it fuses). Kept free of heavy imports: the CLI reads it to build options.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    help: str
    embeds: bool  # needs the query's vector ($vector)
    keyword: bool  # needs the keyword (BM25) index
    side: str | None  # the one side whose rank and score it fills ("semantic" or "keyword"); None: fused, fills both

    @property
    def query(self) -> str:
        return f"{self.name}_search"


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("hybrid", "both sides fused by article (the default)", embeds=True, keyword=True, side=None),
        Mode("semantic", "cosine similarity of passage vectors", embeds=True, keyword=False, side="semantic"),
        Mode("keyword", "BM25 over passage words", embeds=False, keyword=True, side="keyword"),
    )
}
DEFAULT = "hybrid"
