"""Plain float64 loop re-computations of the MS, PSD and OBDP formulas, the yardstick of the criterion tests.

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


def margin(embeddings, labels, triplets, beta, margin_value, nu=0.0):
    """Margin loss over given (a, p, n) triplets; beta is a per-class tensor. As Wu et al.'s code:
    (sum of the terms + nu * sum of the betas used) / (number of non-zero terms)."""
    rows = embeddings.double()
    terms, active = [], 0
    for a, p, n in triplets:
        d_ap = torch.sqrt(((rows[a] - rows[p]) ** 2).sum() + 1e-8)
        d_an = torch.sqrt(((rows[a] - rows[n]) ** 2).sum() + 1e-8)
        class_beta = beta[int(labels[a])].double()
        pos = torch.clamp(d_ap - class_beta + margin_value, min=0)
        neg = torch.clamp(class_beta - d_an + margin_value, min=0)
        active += int(pos > 0) + int(neg > 0)
        terms.append(pos + neg + nu * class_beta)
    return sum(terms) / max(active, 1)


# ---- Loop re-computations of the other criteria (float64 autograd through scalar operations). ----

def pair_distance(x, y, distance="euclidean", squared=False):
    if distance == "euclidean":
        value = sum((x[k] - y[k]) ** 2 for k in range(len(x)))
        return value if squared else torch.sqrt(value)
    value = 1 - sum(x[k] * y[k] for k in range(len(x))) / (torch.sqrt(sum(v * v for v in x))
                                                           * torch.sqrt(sum(v * v for v in y)))
    return value ** 2 if squared else value


def relu(value):
    return torch.clamp(value, min=0)


def log_sum_exp(values):
    top = max(float(v.detach()) for v in values)
    return top + torch.log(sum(torch.exp(v - top) for v in values))


def norm(x):
    return torch.sqrt(sum(v * v for v in x))


def unit(x):
    return x / norm(x)


def dot(x, y):
    return sum(x[k] * y[k] for k in range(len(x)))


def positives_of(labels, i):
    return [j for j in range(len(labels)) if labels[j] == labels[i] and j != i]


def negatives_of(labels, i):
    return [j for j in range(len(labels)) if labels[j] != labels[i]]


def triplet(embeddings, triplets, margin, distance="euclidean"):
    rows = embeddings.double()
    terms = [relu(pair_distance(rows[a], rows[p], distance, squared=True)
                  - pair_distance(rows[a], rows[n], distance, squared=True) + margin) for a, p, n in triplets]
    return sum(terms) / len(terms)


def contrastive(embeddings, triplets, pos_margin, neg_margin, distance="euclidean"):
    rows = embeddings.double()
    pos = sum(relu(pair_distance(rows[a], rows[p], distance) - pos_margin) for a, p, _ in triplets)
    neg = sum(relu(neg_margin - pair_distance(rows[a], rows[n], distance)) for a, _, n in triplets)
    return pos / len(triplets) + neg / len(triplets)


def lifted(embeddings, labels, neg_margin, l2, distance="euclidean"):
    rows, labels = embeddings.double(), [int(label) for label in labels]
    per_anchor = []
    for a in range(len(labels)):
        positives, negatives = positives_of(labels, a), negatives_of(labels, a)
        if positives and negatives:
            pos = log_sum_exp([pair_distance(rows[a], rows[p], distance) for p in positives])
            neg = log_sum_exp([neg_margin - pair_distance(rows[a], rows[n], distance) for n in negatives])
            per_anchor.append(relu(pos + neg))
    return sum(per_anchor) / len(per_anchor) + l2 * sum(norm(row) for row in rows) / len(rows)


def npair(embeddings, labels, pairs, l2):
    rows, labels = embeddings.double(), [int(label) for label in labels]
    terms = [torch.log(1 + sum(torch.exp(dot(rows[a], rows[n]) - dot(rows[a], rows[p]))
                               for n in negatives_of(labels, a))) for a, p in pairs]
    return sum(terms) / len(terms) + l2 * sum(norm(row) for row in rows) / len(rows)


def angular(embeddings, labels, pairs, alpha, npair_ang_weight, npair_l2):
    rows, labels = embeddings.double(), [int(label) for label in labels]
    tan2 = math.tan(alpha * math.pi / 180) ** 2
    angular_terms, npair_terms = [], []
    for a, p in pairs:
        xa, xp = unit(rows[a]), unit(rows[p])
        angular_terms.append(torch.log(1 + sum(
            torch.exp(4 * tan2 * dot(xa + xp, unit(rows[n])) - 2 * (1 + tan2) * dot(xa, xp))
            for n in negatives_of(labels, a))))
        npair_terms.append(torch.log(1 + sum(
            torch.exp(torch.clamp(dot(rows[a], rows[n]) - dot(rows[a], rows[p]), -50, 50))
            for n in negatives_of(labels, a))))
    return (sum(npair_terms) / len(pairs) + npair_ang_weight * sum(angular_terms) / len(pairs)
            + npair_l2 * sum(norm(row) for row in rows) / len(rows))


def quadruplet(embeddings, triplets, fourth, margin_alpha_1, margin_alpha_2, distance="euclidean"):
    """`fourth` maps a triplet's position to its fourth sample k (triplets without one are absent)."""
    rows = embeddings.double()
    triplet_terms = [relu(pair_distance(rows[a], rows[p], distance) - pair_distance(rows[a], rows[n], distance)
                          + margin_alpha_1) for a, p, n in triplets]
    quadruplet_terms = [relu(pair_distance(rows[triplets[t][0]], rows[triplets[t][1]], distance)
                             - pair_distance(rows[triplets[t][2]], rows[k], distance) + margin_alpha_2)
                        for t, k in fourth.items()]
    return sum(triplet_terms) / len(triplet_terms) + sum(quadruplet_terms) / max(len(quadruplet_terms), 1)


def unbiased_variance(x):
    mean = sum(x) / len(x)
    return sum((v - mean) ** 2 for v in x) / (len(x) - 1)


def snr(embeddings, triplets, margin, reg_lambda):
    rows = embeddings.double()
    terms, regulariser = [], 0
    for a, p, n in triplets:
        noise = unbiased_variance(rows[a])
        terms.append(relu(unbiased_variance(rows[p] - rows[a]) / noise
                          - unbiased_variance(rows[n] - rows[a]) / noise + margin))
        regulariser = regulariser + torch.abs(sum(rows[a]))
    active = sum(int(term > 0) for term in terms)
    return sum(terms) / max(active, 1) + reg_lambda * regulariser / len(triplets)


def histogram(embeddings, labels, nbins):
    rows, labels = embeddings.double(), [int(label) for label in labels]
    step = 2 / (nbins - 1)
    nodes = [-1 + r * step for r in range(nbins)]
    positive, negative = [], []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            (positive if labels[i] == labels[j] else negative).append(dot(unit(rows[i]), unit(rows[j])))

    def spread(similarities):
        return [sum(relu(1 - torch.abs(s - node) / step) for s in similarities) / len(similarities) for node in nodes]

    positive_histogram, negative_histogram = spread(positive), spread(negative)
    return sum(negative_histogram[r] * sum(positive_histogram[: r + 1]) for r in range(nbins))


def circle(embeddings, labels, margin, gamma):
    rows, labels = embeddings.double(), [int(label) for label in labels]
    per_anchor = []
    for a in range(len(labels)):
        positives, negatives = positives_of(labels, a), negatives_of(labels, a)
        if not positives or not negatives:
            continue
        pos_logits, neg_logits = [], []
        for p in positives:
            s = dot(unit(rows[a]), unit(rows[p]))
            pos_logits.append(-gamma * max(1 + margin - float(s.detach()), 0) * (s - (1 - margin)))
        for n in negatives:
            s = dot(unit(rows[a]), unit(rows[n]))
            neg_logits.append(gamma * max(float(s.detach()) + margin, 0) * (s - margin))
        per_anchor.append(torch.nn.functional.softplus(log_sum_exp(pos_logits) + log_sum_exp(neg_logits)))
    return sum(per_anchor) / len(per_anchor)


def eml(embeddings, labels, beta, distance="euclidean"):
    rows, labels = embeddings.double(), [int(label) for label in labels]
    per_anchor = []
    for a in range(len(labels)):
        positives, negatives = positives_of(labels, a), negatives_of(labels, a)
        if positives and negatives:
            pos_mean = sum(torch.exp(pair_distance(rows[a], rows[p], distance, squared=True))
                           for p in positives) / len(positives)
            neg_mean = sum(torch.exp(-pair_distance(rows[a], rows[n], distance, squared=True))
                           for n in negatives) / len(negatives)
            per_anchor.append(torch.log(1 + beta * pos_mean * neg_mean) / math.log(1 + beta))
    return sum(per_anchor) / len(per_anchor)


def cross_entropy(logits, target):
    return log_sum_exp(logits) - logits[target]


def proxynca(embeddings, labels, proxies, scale):
    rows, proxies = embeddings.double(), proxies.double()
    terms = []
    for i, label in enumerate(int(label) for label in labels):
        x = scale * unit(rows[i])
        d = [pair_distance(x, scale * unit(proxies[c]), squared=True) for c in range(len(proxies))]
        terms.append(d[label] + log_sum_exp([-d[c] for c in range(len(proxies)) if c != label]))
    return sum(terms) / len(terms)


def proxyanchor(embeddings, labels, proxies, alpha, delta):
    rows, proxies, labels = embeddings.double(), proxies.double(), [int(label) for label in labels]
    positive_terms, negative_terms = [], []
    for c in range(len(proxies)):
        s = [dot(unit(rows[i]), unit(proxies[c])) for i in range(len(labels))]
        members = [i for i in range(len(labels)) if labels[i] == c]
        if members:
            positive_terms.append(torch.log(1 + sum(torch.exp(-alpha * (s[i] - delta)) for i in members)))
        negative_terms.append(torch.log(1 + sum(torch.exp(alpha * (s[i] + delta))
                                                for i in range(len(labels)) if labels[i] != c)))
    return sum(positive_terms) / len(positive_terms) + sum(negative_terms) / len(negative_terms)


def softtriplet(embeddings, labels, centroids, n_centroids, margin_delta, gamma, la, reg_weight):
    """centroids: (n_classes * n_centroids) x D, class c owning rows c*K .. c*K + K - 1."""
    rows, centroids = embeddings.double(), centroids.double()
    n_classes = len(centroids) // n_centroids
    terms = []
    for i, label in enumerate(int(label) for label in labels):
        x = unit(rows[i])
        logits = []
        for c in range(n_classes):
            s = [dot(x, unit(centroids[c * n_centroids + k])) for k in range(n_centroids)]
            weights = [torch.exp(s[k] / gamma - log_sum_exp([v / gamma for v in s])) for k in range(n_centroids)]
            class_similarity = sum(weights[k] * s[k] for k in range(n_centroids))
            logits.append(la * (class_similarity - (margin_delta if c == label else 0)))
        terms.append(cross_entropy(logits, label))
    spread = 0
    for c in range(n_classes):
        for k in range(n_centroids):
            for m in range(k + 1, n_centroids):
                spread = spread + torch.sqrt(2.00001 - 2 * dot(unit(centroids[c * n_centroids + k]),
                                                               unit(centroids[c * n_centroids + m])))
    return sum(terms) / len(terms) + reg_weight * spread / (n_classes * n_centroids * (n_centroids - 1))


def normalized_softmax(embeddings, labels, class_map, temperature):
    rows, class_map = embeddings.double(), class_map.double()
    terms = [cross_entropy([dot(unit(rows[i]), unit(class_map[c])) / temperature for c in range(len(class_map))],
                           label) for i, label in enumerate(int(label) for label in labels)]
    return sum(terms) / len(terms)


def arcface(embeddings, labels, class_map, angular_margin, feature_scale, sub_centers=1):
    """cos(theta_y + m) for the true class (theta + m < pi in these tests); class c owns rows c*K .. c*K+K-1."""
    rows, class_map = embeddings.double(), class_map.double()
    n_classes = len(class_map) // sub_centers
    terms = []
    for i, label in enumerate(int(label) for label in labels):
        cosines = [max(dot(unit(rows[i]), unit(class_map[c * sub_centers + k])) for k in range(sub_centers))
                   for c in range(n_classes)]
        assert math.acos(float(cosines[label].detach())) + angular_margin < math.pi
        logits = [feature_scale * (torch.cos(torch.acos(cosines[c]) + angular_margin) if c == label else cosines[c])
                  for c in range(n_classes)]
        terms.append(cross_entropy(logits, label))
    return sum(terms) / len(terms)
