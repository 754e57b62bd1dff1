"""Recommendation algorithms and their metrics. Nothing here knows Airflow or MLflow."""

from models.als import ALSRecommender
from models.base import Recommender
from models.popularity import PopularityRecommender

__all__ = ["ALSRecommender", "PopularityRecommender", "Recommender"]
