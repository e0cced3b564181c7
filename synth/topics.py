"""Textbook topics from a web corpus: TF-IDF vectors clustered with MiniBatchKMeans.

As in Cosmopedia, topics come from the web text itself, so textbooks cover what the corpus is about;
each cluster's highest-weight centroid terms name its topic.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass
class Topics:
    labels: np.ndarray  # (n_docs,) cluster of each document
    key_terms: list[list[str]]  # per cluster, its top terms
    sizes: list[int]  # per cluster, its number of documents


def fit_topics(texts: list[str], n_topics: int = 0, seed: int = 0, n_terms: int = 8) -> Topics:
    """Cluster `texts` into `n_topics` topics (0: about sqrt(number of texts))."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not texts:
        raise ValueError("no source documents to draw textbook topics from")
    n_topics = n_topics or max(1, round(math.sqrt(len(texts))))
    n_topics = min(n_topics, len(texts))
    # Drop words in >90% of documents (boilerplate) and in only one (names, typos) once there are
    # enough documents for those bounds to mean something.
    many = len(texts) >= 20
    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True, max_features=50_000,
                                 min_df=2 if many else 1, max_df=0.9 if many else 1.0,
                                 token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b")
    try:
        X = vectorizer.fit_transform(texts)
    except ValueError:
        raise ValueError("the source documents have no words left after stop-word removal; "
                         "textbook topics need real text") from None
    km = MiniBatchKMeans(n_clusters=n_topics, random_state=seed, n_init=3, batch_size=1024)
    labels = km.fit_predict(X)
    terms = vectorizer.get_feature_names_out()
    key_terms = [[str(terms[j]) for j in np.argsort(-centroid)[:n_terms] if centroid[j] > 0]
                 for centroid in km.cluster_centers_]
    sizes = np.bincount(labels, minlength=n_topics).tolist()
    return Topics(labels=labels, key_terms=key_terms, sizes=sizes)
