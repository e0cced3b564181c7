"""Phase schedules: a run whose data changes at phase boundaries (docs/schedules.md).

    phases = [{until = 0.8, mixture = "cc"}, {until = 1.0, mixture = "cc67_hq33"}]   # a run or sweep config
    --phases cc:0.8,cc67_hq33:1                                                      # the command line

Phase i covers the optimizer steps [end(i - 1), end(i)) with end(i) = n_steps - round((1 - until_i) * n_steps),
the same rounding as the wsd decay start (`train.schedule.wsd_decay_start`), so a phase that ends at
`1 - decay_frac` switches the data exactly where the learning rate starts to decay.

Each mixture is one packed token stream read in order: a phase continues its mixture's stream where an
earlier phase on the same mixture left off (its first sequence position is the sum of those phases'
sequences), so the data order stays a pure function of the step (resume is exact across a boundary), a
phase on a mixture not seen before starts at the beginning of its stream, and a schedule whose phases all
name one mixture is the static run on it. A schedule's first phase reads exactly what a static run on
its mixture reads, which is why a cooldown can branch from a static trunk (train.loop, train.sweep).

Token accounting is exact: `row_sources` turns a mixture's segments.npy (its provenance: part, tokens per
drawn document, in stream order) into tokens per part for every row, and `phase_tokens` sums the rows a
phase consumed (rows of seq_len + 1 tokens, so the counts of a phase that reads its whole stream once
are the mixture's per-part token counts, i.e. its configured shares of the stream).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from corpora.store import StoreError

_PHASE_RE = re.compile(r"^([A-Za-z0-9_.=-]+):([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$")
UNTIL_TOLERANCE = 1e-9   # the last phase's `until` must be 1 within this


class PhaseError(StoreError, ValueError):
    """A phase schedule that cannot run as written; the message names what to change."""


@dataclasses.dataclass(frozen=True)
class Span:
    """One phase in steps: [start_step, end_step) on `mixture`, reading its stream from `first_position`."""
    index: int
    mixture: str
    until: float
    start_step: int
    end_step: int
    first_position: int

    def position(self, sequences_seen: int, seqs_per_step: int) -> int:
        """The stream position of global sequence `sequences_seen` (which lies in this phase)."""
        return self.first_position + sequences_seen - self.start_step * seqs_per_step


def parse_phases(value) -> list[dict]:
    """'cc:0.8,mix:1' or [{until, mixture}, ...] (TOML) -> [{"until": 0.8, "mixture": "cc"}, ...], checked:
    ends strictly increasing in (0, 1], the last one 1. An empty value is no schedule ([])."""
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        phases = []
        for item in (s.strip() for s in value.split(",")):
            m = _PHASE_RE.match(item)
            if not m:
                raise PhaseError(f"malformed phase {item!r} in {value!r}: write mixture:until pairs, e.g. "
                                 "cc:0.8,cc67_hq33:1")
            phases.append({"until": float(m.group(2)), "mixture": m.group(1)})
    elif isinstance(value, (list, tuple)):
        phases = []
        for i, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != {"until", "mixture"}:
                raise PhaseError(f"phase {i + 1} is {item!r}: write {{until = 0.8, mixture = \"cc\"}}")
            if not isinstance(item["mixture"], str) or isinstance(item["until"], bool) \
                    or not isinstance(item["until"], (int, float)):
                raise PhaseError(f"phase {i + 1}: mixture must be a name and until a number, not {item!r}")
            phases.append({"until": float(item["until"]), "mixture": item["mixture"]})
    else:
        raise PhaseError(f"phases must be a list of {{until, mixture}} tables or 'mix:until,...', not {value!r}")
    check_phases(phases)
    return phases


def check_phases(phases: list[dict]) -> None:
    ends = [p["until"] for p in phases]
    for i, (a, b) in enumerate(zip([0.0] + ends, ends)):
        if not b > a:
            raise PhaseError(f"phase ends must increase from 0 to 1, but phase {i + 1} ends at {b:g} after "
                             f"{a:g}: {format_phases(phases)}")
    if abs(ends[-1] - 1.0) > UNTIL_TOLERANCE:
        raise PhaseError(f"the last phase must end at 1 (the end of the run), not {ends[-1]:g}: "
                         f"{format_phases(phases)}")


def format_phases(phases: list[dict]) -> str:
    """[{until 0.8, cc}, {until 1, hq}] -> 'cc:0.8,hq:1' (the CLI form; also the label of a phased run)."""
    return ",".join(f"{p['mixture']}:{p['until']:g}" for p in phases)


def phase_mixtures(phases: list[dict], mixture: str) -> list[str]:
    """The distinct mixtures a run reads, in first-use order (the static run: its mixture)."""
    return list(dict.fromkeys(p["mixture"] for p in phases)) if phases else [mixture]


def spans(phases: list[dict], mixture: str, n_steps: int, seqs_per_step: int) -> list[Span]:
    """The schedule in steps (module docstring); a static run is one span on its mixture."""
    phases = phases or [{"until": 1.0, "mixture": mixture}]
    out, read, start = [], {}, 0
    for i, p in enumerate(phases):
        end = n_steps if i == len(phases) - 1 else n_steps - round((1.0 - p["until"]) * n_steps)
        if end <= start:
            raise PhaseError(f"phase {i + 1} ({p['mixture']} until {p['until']:g}) gets no optimizer step of "
                             f"the run's {n_steps}; raise the budget or widen the phase")
        out.append(Span(i, p["mixture"], p["until"], start, end, read.get(p["mixture"], 0)))
        read[p["mixture"]] = read.get(p["mixture"], 0) + (end - start) * seqs_per_step
        start = end
    return out


def span_at(plan: list[Span], step: int) -> Span:
    for span in plan:
        if step < span.end_step:
            return span
    return plan[-1]


def prefix(plan: list[Span], step: int) -> list[tuple]:
    """What the schedule reads before `step`: (mixture, start, end, first position) per phase, cut at `step`.
    Two runs with equal prefixes (and equal other settings) see the same data in those steps."""
    return [(s.mixture, s.start_step, min(s.end_step, step), s.first_position) for s in plan if s.start_step < step]


# ------------------------------------------------------------------------------------------- accounting
def row_sources(segments: np.ndarray, n_rows: int, row_width: int, n_parts: int) -> np.ndarray:
    """(n_rows, n_parts) tokens of each part in each row of a packed stream, from its segments
    ((part, n_tokens) per document in stream order); the rows cover the first n_rows * row_width tokens."""
    part, length = segments[:, 0].astype(np.int64), segments[:, 1].astype(np.int64)
    ends = np.cumsum(length)
    starts = ends - length
    bounds = np.arange(n_rows + 1, dtype=np.int64) * row_width
    seg = np.minimum(np.searchsorted(ends, bounds, side="right"), len(length) - 1)  # segment holding each bound
    out = np.empty((n_rows, n_parts), dtype=np.int64)
    for p in range(n_parts):
        before = np.concatenate([[0], np.cumsum(np.where(part == p, length, 0))])  # part-p tokens before segment k
        at = before[seg] + np.where(part[seg] == p, np.clip(bounds - starts[seg], 0, length[seg]), 0)
        out[:, p] = np.diff(at)
    return out


def phase_tokens(plan: list[Span], steps_done: int, seqs_per_step: int, seq_len: int, seed: int,
                 sources: dict[str, tuple[list[str], np.ndarray] | None]) -> list[dict]:
    """Per phase: its steps, trained tokens and, where the mixture's provenance is known
    (`sources[mixture]` = (part corpora, row_sources array)), the stream tokens per source corpus of the
    rows it consumed in the first `steps_done` steps."""
    from train.loop import sequence_indices

    out = []
    for s in plan:
        steps = max(0, min(steps_done, s.end_step) - s.start_step)
        row = {"phase": s.index, "mixture": s.mixture, "until": s.until, "start_step": s.start_step,
               "end_step": s.end_step, "steps": steps, "tokens": steps * seqs_per_step * seq_len, "sources": None}
        src = sources.get(s.mixture)
        if src is not None:
            corpora, counts = src
            rows = sequence_indices(s.first_position, steps * seqs_per_step, len(counts), seed)
            row["sources"] = dict(zip(corpora, (int(x) for x in counts[rows].sum(axis=0))))
        out.append(row)
    return out


def load_row_sources(store, mixture: str, stream: np.ndarray) -> tuple[list[str], np.ndarray] | None:
    """(part corpora, `row_sources`) of a built mixture whose train.npy is `stream`; None when the store does
    not hold its provenance (a stream that did not come from `train.data.build_mixture`)."""
    from train.data import read_mixture_meta

    meta = read_mixture_meta(store, mixture)
    if meta is None:
        return None
    path = store.artifact_dir("mixtures", mixture, create=False) / "segments.npy"
    if not path.exists() or int(meta["n_sequences"]) != len(stream):
        return None
    corpora = [p["corpus"] for p in meta["parts"]]
    return corpora, row_sources(np.load(path), len(stream), stream.shape[1], len(corpora))
