"""Classifiers that cannot forget: closed forms on a frozen representation, from sufficient statistics.

Every learner here keeps the same state, the sufficient statistics of the labelled images seen so
far (`ClassStats`): per class its count n_c and mean m_c, and the pooled within-class scatter
S_w = sum_c sum_{i in c} (x_i - m_c)(x_i - m_c)^T. The state after a stream is a function of the
multiset of (image, label) pairs only, so no learner depends on the order of classes or images:

* `update` adds one image (Welford's per-class update, exact: S_w += n/(n+1) (x - m_y)(x - m_y)^T
  with n the class's count before the image); `from_batch` is the same state in closed form, and
  `from_classes` the closed form for images grouped by class (what the evaluation uses).
  Class rows are kept sorted by class id, whatever order the classes arrived in.
* `ncm_scores`: nearest class mean, -||x - m_c||^2 (Euclidean; no parameters).
* `slda_scores`: linear discriminant analysis with the shared covariance S_w / N shrunk towards
  the scaled identity, (1 - eps) S + eps (tr S / F) I (Hayes & Kanan 2020's classifier, with their
  order-dependent covariance step replaced by the exact pooled one: docs/learners.md).
* `gauss_scores`: the Bayesian Gaussian classifier. Each class c has its own mean mu_c and all
  share one covariance Sigma; prior p(mu_c) flat, Sigma ~ inverse-Wishart(Psi0, nu0). The posterior
  is Sigma | data ~ IW(Psi0 + S_w, nu0 + N - K), mu_c | Sigma ~ N(m_c, Sigma / n_c), and a new
  image of class c has the multivariate Student-t predictive with dof = nu0 + N - K - F + 1,
  location m_c and shape (Psi0 + S_w) (n_c + 1) / (n_c dof). Class probabilities: the
  Dirichlet(1) predictive (n_c + 1) / (N + K). `gauss_prior` sets Psi0 and nu0 (docs/learners.md).

Scores are [images, classes] in the order of `stats.classes`; `predict` turns them into class ids
(ties go to the smaller id). Everything is float64 torch, on whichever device the inputs are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DTYPE = torch.float64
SHRINKAGE_GRID = (1.0, 0.5, 0.2, 0.1, 0.03, 0.01, 1e-3, 1e-4)  # larger first: ties go to more shrinkage
HAYES_KANAN_SHRINKAGE = 1e-4  # their default (towards the unscaled identity)


@dataclass(frozen=True)
class ClassStats:
    """Sufficient statistics of a labelled stream: sorted class ids [K], counts [K], class means
    [K, F] and the pooled within-class scatter [F, F] (not divided by anything)."""
    classes: torch.Tensor
    counts: torch.Tensor
    means: torch.Tensor
    scatter: torch.Tensor

    @property
    def n_images(self) -> float:
        return float(self.counts.sum())

    @property
    def n_features(self) -> int:
        return self.means.shape[1]


def empty(n_features: int, device="cpu") -> ClassStats:
    return ClassStats(torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, dtype=DTYPE, device=device),
                      torch.zeros(0, n_features, dtype=DTYPE, device=device),
                      torch.zeros(n_features, n_features, dtype=DTYPE, device=device))


def update(stats: ClassStats, x: torch.Tensor, y: int) -> ClassStats:
    """The state after one more image x [F] of class y (a new state; `stats` is unchanged)."""
    x = x.to(stats.means)
    y = int(y)
    classes, counts, means = stats.classes, stats.counts, stats.means
    row = int(torch.searchsorted(classes, torch.tensor(y, device=classes.device)))
    if row == len(classes) or int(classes[row]) != y:  # a new class: an empty row at its sorted place
        classes = torch.cat([classes[:row], torch.tensor([y], device=classes.device), classes[row:]])
        counts = torch.cat([counts[:row], counts.new_zeros(1), counts[row:]])
        means = torch.cat([means[:row], means.new_zeros(1, means.shape[1]), means[row:]])
    n = counts[row]
    delta = x - means[row]
    means, counts = means.clone(), counts.clone()
    means[row] = means[row] + delta / (n + 1)
    counts[row] = n + 1
    scatter = stats.scatter + (n / (n + 1)) * torch.outer(delta, delta)
    return ClassStats(classes, counts, means, scatter)


def from_batch(x: torch.Tensor, y: torch.Tensor) -> ClassStats:
    """The same state as `update` over every row of x [N, F] with labels y [N], in closed form."""
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"from_batch takes images [N, F] and labels [N], N >= 1; got {list(x.shape)} and {list(y.shape)}")
    x = x.to(DTYPE)
    classes, index = torch.unique(y, sorted=True, return_inverse=True)
    counts = torch.bincount(index, minlength=len(classes)).to(x)
    sums = torch.zeros(len(classes), x.shape[1], dtype=DTYPE, device=x.device).index_add_(0, index, x)
    means = sums / counts[:, None]
    centred = x - means[index]
    return ClassStats(classes.to(torch.long), counts, means, centred.T @ centred)


def _images(stats: ClassStats, x: torch.Tensor) -> torch.Tensor:
    """x as float64 [M, F], refused (ValueError) unless its features are the statistics' and a class was seen."""
    if x.ndim != 2 or x.shape[1] != stats.n_features:
        raise ValueError(f"images must be [M, {stats.n_features}], got {list(x.shape)}")
    if len(stats.classes) == 0:
        raise ValueError("no class has been seen: nothing to predict")
    return x.to(DTYPE)


def from_classes(feats: torch.Tensor, classes, scatter: bool = True) -> ClassStats:
    """`from_batch` for images already grouped by class: feats [K, k, F] holds class classes[j]'s k
    images in row j. Only means and matrix products, so it is deterministic on CUDA too (no atomic
    adds). scatter=False leaves the scatter zero (NCM does not read it; it is the costly part)."""
    classes = torch.as_tensor(classes, device=feats.device)
    if feats.ndim != 3 or classes.shape != feats.shape[:1] or feats.shape[1] == 0:
        raise ValueError(f"from_classes takes images [K, k, F] (k >= 1) and K class ids; got {list(feats.shape)} "
                         f"and {list(classes.shape)}")
    if len(torch.unique(classes)) != len(classes):
        raise ValueError("from_classes needs each class once")
    order = torch.argsort(classes)
    feats = feats[order].to(DTYPE)
    means = feats.mean(1)
    counts = torch.full((len(classes),), float(feats.shape[1]), dtype=DTYPE, device=feats.device)
    f = feats.shape[2]
    if not scatter:
        return ClassStats(classes[order].to(torch.long), counts, means, feats.new_zeros(f, f))
    centred = (feats - means[:, None]).reshape(-1, f)
    return ClassStats(classes[order].to(torch.long), counts, means, centred.T @ centred)


def predict(stats: ClassStats, scores: torch.Tensor) -> torch.Tensor:
    return stats.classes[scores.argmax(dim=1)]


# --- nearest class mean ----------------------------------------------------------------------------

def ncm_scores(stats: ClassStats, x: torch.Tensor) -> torch.Tensor:
    """-||x - m_c||^2 for every image and class (||x||^2 dropped: the same for every class)."""
    x = _images(stats, x)
    return 2 * x @ stats.means.T - (stats.means ** 2).sum(1)


# --- streaming LDA ---------------------------------------------------------------------------------

def shrunk_covariance(stats: ClassStats, shrinkage: float) -> torch.Tensor:
    """(1 - eps) S + eps (tr S / F) I with S = S_w / N; the identity when S is zero (one image per
    class): then LDA is NCM."""
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
    f = stats.n_features
    cov = stats.scatter / stats.n_images
    scale = float(torch.trace(cov)) / f
    eye = torch.eye(f, dtype=DTYPE, device=cov.device)
    if scale <= 0.0:
        return eye
    return (1.0 - shrinkage) * cov + shrinkage * scale * eye


def slda_scores(stats: ClassStats, x: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """x^T P m_c - m_c^T P m_c / 2 with P the inverse shrunk covariance (equal class priors)."""
    weights = torch.linalg.solve(shrunk_covariance(stats, shrinkage), stats.means.T)  # [F, K]
    return _images(stats, x) @ weights - 0.5 * (stats.means * weights.T).sum(1)


# --- Bayesian Gaussian -----------------------------------------------------------------------------

@dataclass(frozen=True)
class GaussPrior:
    """Inverse-Wishart prior on the shared covariance: scale matrix psi0 * I and dof nu0."""
    psi0: float
    nu0: float


def gauss_prior(stats: ClassStats) -> GaussPrior:
    """nu0 = F + 2, the fewest degrees of freedom for which the prior has a mean, and that mean
    E[Sigma] = psi0 I / (nu0 - F - 1) = psi0 I with psi0 the stream's average per-feature variance
    about its grand mean (empirical Bayes: one image's worth of belief that features are
    independent and alike in scale). A function of the sufficient statistics, so order-free."""
    f = stats.n_features
    n = stats.n_images
    grand = (stats.counts[:, None] * stats.means).sum(0) / n
    between = (stats.counts * ((stats.means - grand) ** 2).sum(1)).sum()
    psi0 = float(torch.trace(stats.scatter) + between) / (n * f)
    return GaussPrior(psi0 if psi0 > 0.0 else 1.0, f + 2.0)


@dataclass(frozen=True)
class GaussPosterior:
    """The posterior predictive of every class: multivariate t with `dof` degrees of freedom,
    location stats.means[c] and shape psi * (n_c + 1) / (n_c * dof)."""
    psi: torch.Tensor   # Psi0 + S_w [F, F]
    dof: float          # nu0 + N - K - F + 1
    log_prior: torch.Tensor  # log (n_c + 1) / (N + K), [K]


def gauss_posterior(stats: ClassStats, prior: GaussPrior) -> GaussPosterior:
    f, k, n = stats.n_features, len(stats.classes), stats.n_images
    dof = prior.nu0 + n - k - f + 1
    if dof <= 0:
        raise ValueError(f"the inverse-Wishart posterior needs nu0 + N - K > F - 1 (nu0 {prior.nu0}, N {n}, K {k}, F {f})")
    psi = stats.scatter + prior.psi0 * torch.eye(f, dtype=DTYPE, device=stats.scatter.device)
    log_prior = torch.log((stats.counts + 1) / (n + k))
    return GaussPosterior(psi, dof, log_prior)


def gauss_log_predictive(stats: ClassStats, posterior: GaussPosterior, x: torch.Tensor) -> torch.Tensor:
    """log p(x | class c, data) for every image and class [M, K]: the multivariate t log-density."""
    f, dof = stats.n_features, posterior.dof
    chol = torch.linalg.cholesky(posterior.psi)
    z = torch.linalg.solve_triangular(chol, _images(stats, x).T, upper=False).T          # L^-1 x      [M, F]
    w = torch.linalg.solve_triangular(chol, stats.means.T, upper=False).T          # L^-1 m_c    [K, F]
    mahalanobis = ((z ** 2).sum(1, keepdim=True) - 2 * z @ w.T + (w ** 2).sum(1)).clamp_min(0.0)  # (x-m)^T psi^-1 (x-m)
    ratio = (stats.counts + 1) / stats.counts                                      # (n_c + 1) / n_c
    log_det_psi = 2 * torch.log(torch.diagonal(chol)).sum()
    const = math.lgamma((dof + f) / 2) - math.lgamma(dof / 2) - 0.5 * f * math.log(math.pi)
    # shape_c = psi ratio_c / dof, so (x-m)^T shape_c^-1 (x-m) / dof = mahalanobis / ratio_c
    log_det_shape = log_det_psi + f * torch.log(ratio / dof)
    return const - 0.5 * log_det_shape - 0.5 * f * math.log(dof) - 0.5 * (dof + f) * torch.log1p(mahalanobis / ratio)


def gauss_scores(stats: ClassStats, x: torch.Tensor, prior: GaussPrior | None = None) -> torch.Tensor:
    """log p(c | x, data) up to a constant per image: the log predictive plus the log class prior."""
    posterior = gauss_posterior(stats, prior or gauss_prior(stats))
    return gauss_log_predictive(stats, posterior, x) + posterior.log_prior
