"""Ranking losses over sparse representations (reference ``scripts/train/loss.py``).

Inputs, on the *global* batch (every process's rows, in global-rank order):
  q: (B, V) query vectors; d: (B*k, V) document vectors in query-major order
  (q0d0, q0d1, ..., q1d0, ...); column/row 0 of each group is the positive (or the first doc).

Student scores (no scaling besides the temperature tau):
  grouped:   S[i, j] = q_i . d_{i*k + j}            -> (B, k)
  in-batch:  S[i, n] = q_i . d_n  for every doc n   -> (B, B*k)

Teacher scores T must have the same shape as the student scores.

Score normalization of the distillation losses (``score_norm``, kldiv and marginmse):
  "std" (default): each row of student scores is standardized and given the teacher row's spread,
      S'[i, j] = (S[i, j] - mean_j S[i]) / (std_j S[i] + eps) * std_j T[i]
  so the loss depends only on how the student orders and spaces its documents, not on the overall
  size of its scores. Without it, a student whose scores are spread wider than the teacher's
  (inference-free scores are sums of IDF x weight, often 2-3x the teacher's spread) lowers the KL
  fastest by shrinking every document weight, and a weight that reaches zero behind the ReLU never
  comes back: documents collapse (docs/training.md has the measurements).
  "none": the raw scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def student_scores(q: torch.Tensor, d: torch.Tensor, in_batch: bool) -> torch.Tensor:
    """(B, k) own-group scores, or (B, B*k) scores against every document when ``in_batch``."""
    if in_batch:
        return q @ d.T
    b = q.shape[0]
    if d.shape[0] % b:
        raise ValueError(f"{d.shape[0]} documents do not split into groups for {b} queries")
    return torch.einsum("bkv,bv->bk", d.view(b, d.shape[0] // b, -1), q)


SCORE_NORMS = ("std", "none")


def normalize_student(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Student rows standardized, then scaled to the teacher row's standard deviation ("std" above)."""
    centered = student - student.mean(dim=1, keepdim=True)
    spread = teacher.to(student.dtype).std(dim=1, unbiased=False, keepdim=True)
    return centered / (student.std(dim=1, unbiased=False, keepdim=True) + eps) * spread


def infonce_loss(q: torch.Tensor, d: torch.Tensor, in_batch: bool = False,
                 exclude_other_positives: bool = False) -> torch.Tensor:
    """InfoNCE: cross-entropy of each query's positive against its negatives.

        L = -(1/B) sum_i log( exp(s(q_i, d_i^+)) / sum_{n in N_i} exp(s(q_i, d_n)) )

    N_i = the query's own k documents (grouped); in-batch, every document of the global batch,
    other queries' positives included (they are documents the query should rank below its own
    positive). ``exclude_other_positives`` drops them (d_{j*k}, j != i) from N_i.
    """
    b = q.shape[0]
    k = d.shape[0] // b
    scores = student_scores(q, d, in_batch)
    if not in_batch:
        target = torch.zeros(b, dtype=torch.long, device=q.device)
        return F.cross_entropy(scores, target)
    target = torch.arange(b, device=q.device) * k
    if exclude_other_positives:
        other_pos = torch.zeros_like(scores, dtype=torch.bool)
        other_pos[:, target] = True
        other_pos[torch.arange(b, device=q.device), target] = False
        scores = scores.masked_fill(other_pos, float("-inf"))
    return F.cross_entropy(scores, target)


def kldiv_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(P_t || P_s), batchmean: P_t = softmax(T / tau), P_s = softmax(S / tau) per row,

        L = (1/B) sum_i sum_j P_t[i, j] (log P_t[i, j] - log P_s[i, j])
    """
    _check_shapes(student, teacher)
    log_ps = F.log_softmax(student / temperature, dim=1)
    log_pt = F.log_softmax(teacher.to(student.dtype) / temperature, dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)


def marginmse_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """MarginMSE: margins to column 0 must match the teacher's,

        L = mean_{i, j>=1} ( (S[i,0] - S[i,j]) / tau - (T[i,0] - T[i,j]) / tau )^2
    """
    _check_shapes(student, teacher)
    s = student / temperature
    t = teacher.to(student.dtype) / temperature
    return F.mse_loss(s[:, :1] - s[:, 1:], t[:, :1] - t[:, 1:])


def _check_shapes(student, teacher):
    if student.shape != teacher.shape:
        raise ValueError(f"teacher scores {tuple(teacher.shape)} do not match student scores {tuple(student.shape)}"
                         " (in-batch mode needs teacher scores against every document of the global batch)")


NEEDS_SCORES = {"infonce": False, "kldiv": True, "marginmse": True}  # loss name -> needs teacher scores
LOSS_TYPES = tuple(NEEDS_SCORES)


class RankingLoss:
    """Weighted sum of the configured losses: ranking_loss_weight * sum_l w_l * L_l."""

    def __init__(self, loss_types, weights=None, in_batch: bool = False, temperature: float = 1.0,
                 exclude_other_positives: bool = False, ranking_loss_weight: float = 1.0,
                 score_norm: str = "std"):
        if score_norm not in SCORE_NORMS:
            raise ValueError(f"score_norm must be one of {SCORE_NORMS}, got {score_norm!r}")
        self.score_norm = score_norm
        unknown = [t for t in loss_types if t not in NEEDS_SCORES]
        if unknown:
            raise ValueError(f"unknown loss types {unknown}; choose from {sorted(NEEDS_SCORES)}")
        self.loss_types = list(loss_types)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.loss_types)
        self.in_batch = in_batch
        self.temperature = temperature
        self.exclude_other_positives = exclude_other_positives
        self.ranking_loss_weight = ranking_loss_weight

    @property
    def needs_scores(self) -> bool:
        return any(NEEDS_SCORES[t] for t in self.loss_types)

    def __call__(self, q, d, scores=None) -> tuple[torch.Tensor, dict[str, float]]:
        total = q.new_zeros(())
        parts = {}
        student = None
        for name, w in zip(self.loss_types, self.weights):
            if name == "infonce":
                value = infonce_loss(q, d, self.in_batch, self.exclude_other_positives)
            else:
                if scores is None:
                    raise ValueError(f"loss {name!r} needs teacher scores: use kd data with scores or a teacher")
                if student is None:
                    student = student_scores(q, d, self.in_batch)
                    if self.score_norm == "std":
                        student = normalize_student(student, scores)
                fn = kldiv_loss if name == "kldiv" else marginmse_loss
                value = fn(student, scores, self.temperature)
            parts[f"loss_{name}"] = float(value.detach())
            total = total + w * value
        return self.ranking_loss_weight * total, parts
