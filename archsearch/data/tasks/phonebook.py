"""Phonebook lookup (Jelassi et al. 2024; the copying task of the Mamba-2-Hybrid study): find a name's number.

A sample is byte-level text so it mixes with LM text in one vocabulary::

    Ada Lovelace: 0412-5567
    Alan Turing: 3391-0248
    ...

    Q: Alan Turing
    A: 3391-0248

Only the final answer's tokens are labelled (teacher forcing: ``labels[t] = ids[t+1]`` for each answer token
``t+1``). Variants: ``query_first`` states the query name before the book too; ``shots`` puts answered queries
about other names before the scored one. The difficulty level is the number of entries in the book.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from archsearch.data.rng import sample_rng
from archsearch.data.tasks.base import Task, check_levels
from archsearch.data.tokenizer import Tokenizer
from archsearch.errors import ConfigError

FIRST_NAMES = (
    "Ada", "Alan", "Alice", "Amara", "Anna", "Arjun", "Beatriz", "Ben", "Carlos", "Chen", "Clara", "Daniel",
    "Dmitri", "Elena", "Emeka", "Emma", "Farah", "Felix", "Grace", "Hana", "Hugo", "Ines", "Ivan", "James",
    "Julia", "Kenji", "Kofi", "Lars", "Leila", "Lucas", "Maria", "Mateo", "Mei", "Nadia", "Noah", "Olga",
    "Omar", "Paolo", "Priya", "Rafael", "Rosa", "Sam", "Sara", "Sofia", "Tariq", "Thomas", "Uma", "Victor",
    "Wei", "Yara", "Yusuf", "Zara", "Bruno", "Chiara", "Diego", "Eva", "Fatima", "Gustav", "Helga", "Igor",
    "Jonas", "Katya", "Liam", "Marta",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Turing", "Hopper", "Okafor", "Nakamura", "Silva", "Kowalski", "Haddad", "Novak", "Garcia",
    "Schmidt", "Rossi", "Ivanova", "Mensah", "Dubois", "Larsen", "Kim", "Patel", "Cohen", "Moreau", "Berg",
    "Costa", "Fischer", "Tanaka", "Ali", "Jensen", "Lopez", "Murphy", "Nguyen", "Owusu", "Petrov", "Quinn",
    "Romero", "Sato", "Torres", "Usman", "Varga", "Weber", "Xu", "Yilmaz", "Zhang", "Bauer", "Conti", "Diaz",
    "Eriksen", "Ferrari", "Gomez", "Horvat", "Ibrahim", "Janssen", "Keller", "Lindqvist", "Mendes", "Nowak",
    "Ortiz", "Pereira", "Reyes", "Santos", "Tran", "Vogel", "Wagner", "Young", "Zimmer", "Banerjee",
)  # fmt: skip


@dataclass
class PhonebookConfig:
    """Phonebook lookup settings.

    Attributes:
        seq_len: tokens per sample (shorter books are padded with ``<pad>``, label -100).
        entries: book sizes to draw from (the difficulty levels); None = 4, 8, 16, ... below the largest book that
            fits seq_len, plus that largest book (which fills the context).
        digits: digits per phone number (a dash splits it in the middle from 6 digits up).
        query_first: also state "Q: <name>" before the book, so a reader knows what to look for.
        shots: answered queries about other names in the book before the scored one.
    """

    seq_len: int = 256
    entries: tuple[int, ...] | None = None
    digits: int = 8
    query_first: bool = False
    shots: int = 0


def _worst_case_sizes(config: PhonebookConfig) -> tuple[int, int]:
    """(tokens per book entry, tokens outside the book) with the longest names, one byte one token."""
    name = max(len(f.encode()) for f in FIRST_NAMES) + 1 + max(len(s.encode()) for s in LAST_NAMES)
    num = config.digits + (1 if config.digits >= 6 else 0)
    entry = name + 2 + num + 1  # "Name: 0412-5567\n"
    query = 3 + name + 1 + 3 + num + 1  # "Q: Name\nA: 0412-5567\n"
    fixed = (3 + name + 1 if config.query_first else 0) + 1 + config.shots * query + query - 1
    return entry, fixed


class PhonebookTask(Task):
    """Phonebook lookup: exact match on the queried number (see the module docstring for the format)."""

    name = "phonebook"
    Config = PhonebookConfig
    metric = "sequence"

    def __init__(self, config: PhonebookConfig, tokenizer: Tokenizer):
        super().__init__(config, tokenizer)
        if not 2 <= config.digits <= 32:
            raise ConfigError(
                f"expected 2 to 32 digits, got {config.digits}", source="task phonebook", key="digits"
            )
        if config.shots < 0:
            raise ConfigError(
                f"expected shots >= 0, got {config.shots}", source="task phonebook", key="shots"
            )
        most = self.max_entries()
        if most < config.shots + 1:
            raise ConfigError(
                f"seq_len {config.seq_len} holds at most {most} phonebook entries, fewer than shots + 1 = "
                f"{config.shots + 1}; use a longer seq_len or fewer shots",
                source="task phonebook",
                key="seq_len",
            )
        if config.entries is None:
            auto = [n for n in (2**k for k in range(2, 20)) if config.shots + 1 <= n < most]
            self._levels = tuple(auto) + (most,)
        else:
            self._levels = check_levels("phonebook", "entries", config.entries, config.shots + 1, most)

    @property
    def levels(self) -> tuple[int, ...]:
        return self._levels

    def max_entries(self) -> int:
        """The largest book whose worst case (longest names) fits seq_len, counting one byte as one token."""
        entry, fixed = _worst_case_sizes(self.config)
        return max(0, (self.config.seq_len - fixed) // entry)

    @classmethod
    def fit_seq_len(cls, seq_len: int, options: dict | None) -> int:
        """``seq_len``, raised so the largest requested book fits (a held-out set may test larger books)."""
        entries = (options or {}).get("entries")
        if not entries or not all(isinstance(n, int) for n in entries):
            return seq_len
        known = {f.name for f in dataclasses.fields(PhonebookConfig)}
        config = PhonebookConfig(
            **{k: v for k, v in (options or {}).items() if k in known and k != "entries"}
        )
        entry, fixed = _worst_case_sizes(config)
        return max(seq_len, fixed + entry * max(entries))

    def _number(self, rng) -> str:
        digits = "".join(str(d) for d in rng.integers(0, 10, size=self.config.digits))
        if self.config.digits >= 6:
            half = self.config.digits // 2
            return f"{digits[:half]}-{digits[half:]}"
        return digits

    def sample(self, index: int, seed: int) -> dict:
        """Sample ``index``: a book of ``level_for(index)`` entries, then the query; the number is labelled."""
        cfg = self.config
        rng = sample_rng(seed, index, self.name)
        level = self.level_for(index)
        picks = rng.choice(len(FIRST_NAMES) * len(LAST_NAMES), size=level, replace=False)
        names = [f"{FIRST_NAMES[p // len(LAST_NAMES)]} {LAST_NAMES[p % len(LAST_NAMES)]}" for p in picks]
        numbers = [self._number(rng) for _ in names]
        order = rng.permutation(level)  # which entries are queried: order[0] scored, order[1:] the shots
        target = int(order[0])
        enc = self.tokenizer.encode
        ids: list[int] = []
        if cfg.query_first:
            ids += enc(f"Q: {names[target]}\n")
        for name, number in zip(names, numbers, strict=True):
            ids += enc(f"{name}: {number}\n")
        ids += enc("\n")
        for shot in order[1 : 1 + cfg.shots]:
            ids += enc(f"Q: {names[shot]}\nA: {numbers[shot]}\n")
        ids += enc(f"Q: {names[target]}\nA: ")
        start = len(ids)
        ids += enc(numbers[target])
        return self._pack(ids, [(start, len(ids))], level)

    def answer_from_prompt(self, input_ids) -> str:
        """The oracle: read the queried name from the decoded prompt and look its number up in the book."""
        text = self.tokenizer.decode(input_ids)
        book, _, queries = text.partition("\n\n")
        query = queries.rsplit("Q: ", 1)[1].split("\n", 1)[0]
        for line in book.split("\n"):
            name, _, number = line.partition(": ")
            if name == query:
                return number
        raise LookupError(query)
