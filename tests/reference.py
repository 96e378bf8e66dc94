"""Plain float64 loop re-computations of SPEC section 1, the yardstick of the criterion tests.

Written for clarity, not speed: one Python loop per sum in the formula.
"""
import math

import numpy as np
import torch


def cosine_matrix(embeddings):
    rows = embeddings.double()
    return [[rows[i].dot(rows[j]) for j in range(len(rows))] for i in range(len(rows))]


def multisimilarity(embeddings, labels, pos_weight=2.0, neg_weight=40.0, margin=0.1, thresh=0.5):
    labels = [int(label) for label in labels]
    similarity = cosine_matrix(embeddings)
    per_anchor = []
    for i in range(len(labels)):
        positives = [j for j in range(len(labels)) if labels[j] == labels[i] and j != i]
        negatives = [j for j in range(len(labels)) if labels[j] != labels[i]]
        if not positives or not negatives:
            continue
        hardest_positive = min(float(similarity[i][j].detach()) for j in positives)
        hardest_negative = max(float(similarity[i][j].detach()) for j in negatives)
        kept_positives = [j for j in positives if float(similarity[i][j].detach()) - margin < hardest_negative]
        kept_negatives = [j for j in negatives if float(similarity[i][j].detach()) + margin > hardest_positive]
        if not kept_positives or not kept_negatives:
            continue
        pos_sum = sum(torch.exp(-pos_weight * (similarity[i][j] - thresh)) for j in kept_positives)
        neg_sum = sum(torch.exp(neg_weight * (similarity[i][j] - thresh)) for j in kept_negatives)
        per_anchor.append(torch.log(1 + pos_sum) / pos_weight + torch.log(1 + neg_sum) / neg_weight)
    if not per_anchor:
        return embeddings.double().sum() * 0
    return sum(per_anchor) / len(per_anchor)


def row_softmax(matrix, tau, skip_diagonal=False):
    size = len(matrix)
    result = np.zeros((size, size))
    for i in range(size):
        columns = [j for j in range(size) if not (skip_diagonal and j == i)]
        top = max(float(matrix[i][j]) / tau for j in columns)
        exps = {j: math.exp(float(matrix[i][j]) / tau - top) for j in columns}
        total = sum(exps.values())
        for j in columns:
            result[i, j] = exps[j] / total
    return result


def diffused_target(teacher, kd_tau, w, diffusion_tau):
    """Q = (1 - w) (I - w P)^-1 q with an explicit float64 inverse (the dense closed form)."""
    similarity = cosine_matrix(teacher)
    target = row_softmax(similarity, kd_tau)
    if w == 0:
        return target
    transition = row_softmax(similarity, diffusion_tau, skip_diagonal=True)
    return (1 - w) * np.linalg.inv(np.eye(len(target)) - w * transition) @ target


def kl_batchmean(student, target, kd_tau):
    """1/B sum_i sum_j Q_ij (log Q_ij - log p_ij), p = row_softmax(F F^T / kd_tau), with autograd."""
    similarity = cosine_matrix(student)
    size = len(similarity)
    total = 0
    for i in range(size):
        log_normaliser = torch.logsumexp(torch.stack([similarity[i][j] / kd_tau for j in range(size)]), 0)
        for j in range(size):
            if target[i, j] > 0:
                total = total + target[i, j] * (math.log(target[i, j]) - (similarity[i][j] / kd_tau - log_normaliser))
    return total / size


def margin(embeddings, labels, triplets, beta, margin_value):
    """Margin loss over given (a, p, n) triplets; beta is a per-class tensor."""
    rows = embeddings.double()
    terms, active = [], 0
    for a, p, n in triplets:
        d_ap = torch.sqrt(((rows[a] - rows[p]) ** 2).sum() + 1e-8)
        d_an = torch.sqrt(((rows[a] - rows[n]) ** 2).sum() + 1e-8)
        class_beta = beta[int(labels[a])].double()
        pos = torch.clamp(d_ap - class_beta + margin_value, min=0)
        neg = torch.clamp(class_beta - d_an + margin_value, min=0)
        active += int(pos > 0) + int(neg > 0)
        terms.append(pos + neg)
    return sum(terms) / max(active, 1)
