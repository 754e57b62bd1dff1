"""Recommendation algorithms and their metrics. Nothing here knows Airflow or MLflow.

Importing the package registers every algorithm by its ``name``, so ``Recommender.load`` can
rebuild any of them; heavy libraries (implicit, LightGBM, torch) are imported only when used.
"""

from models.als import ALSRecommender
from models.base import Recommender, algorithm
from models.bpr import BPRRecommender
from models.content import ContentALSRecommender
from models.ease import CatalogTooLargeError, EASERecommender
from models.itemknn import BM25ItemKNNRecommender, CosineItemKNNRecommender
from models.popularity import PopularityRecommender, RecentPopularityRecommender
from models.ranker import RankerRecommender
from models.sasrec import SASRecRecommender

__all__ = [
    "ALSRecommender",
    "BM25ItemKNNRecommender",
    "BPRRecommender",
    "CatalogTooLargeError",
    "ContentALSRecommender",
    "CosineItemKNNRecommender",
    "EASERecommender",
    "PopularityRecommender",
    "RankerRecommender",
    "RecentPopularityRecommender",
    "Recommender",
    "SASRecRecommender",
    "algorithm",
]
