"""A character vocabulary: id 0 is padding, id 1 the unknown symbol, then the known characters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

PAD_ID = 0
UNK_ID = 1
UNK_TEXT = "\N{REPLACEMENT CHARACTER}"  # how an unknown id is decoded


class Vocabulary:
    """Maps characters to ids and back; characters never seen in training map to ``UNK_ID``."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = list(symbols)
        self.index = {s: i + 2 for i, s in enumerate(self.symbols)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocabulary:
        """Every character of ``texts``, sorted, so the same texts always give the same ids."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls(sorted(chars))

    def __len__(self) -> int:
        return len(self.symbols) + 2

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.symbols == other.symbols

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, UNK_ID) for c in text]

    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, longest) ids padded with ``PAD_ID``, and the (n,) lengths."""
        rows = [self.encode(t) for t in texts]
        longest = max((len(r) for r in rows), default=0)
        ids = torch.tensor([r + [PAD_ID] * (longest - len(r)) for r in rows], dtype=torch.long)
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        return ids.view(len(rows), longest), lengths

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text; padding is dropped, unknown ids become U+FFFD."""
        out = []
        for i in ids:
            i = int(i)
            if i == PAD_ID:
                continue
            out.append(self.symbols[i - 2] if i >= 2 else UNK_TEXT)
        return "".join(out)
