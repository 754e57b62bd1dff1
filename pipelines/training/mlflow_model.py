"""The MLflow face of a recforge model: a pyfunc that loads and recommends on its own.

Logged as "models from code": MLflow stores this file, not a pickle, and loads it with
``models/`` on the path. Anyone with registry access can call
``mlflow.pyfunc.load_model("models:/recforge-recommender@champion")`` and then
``predict(pd.DataFrame({"user_id": [...]}), params={"k": 10})`` without recforge's pipelines.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd

from models.base import Recommender
from models.columns import Columns


class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = Recommender.load(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        users = model_input[Columns.User].astype(str).to_numpy()
        index = pd.Index(self.model.user_ids).get_indexer(users)
        known = index >= 0
        items, scores = self.model.recommend(index[known], k)
        user_col = np.repeat(users[known], items.shape[1])
        rank = np.tile(np.arange(1, items.shape[1] + 1), known.sum())
        flat_items, flat_scores = items.ravel(), scores.ravel()
        keep = flat_items >= 0
        return pd.DataFrame(
            {
                Columns.User: user_col[keep],
                Columns.Rank: rank[keep],
                Columns.Item: self.model.item_ids[flat_items[keep]].astype(str),
                Columns.Score: flat_scores[keep].astype(float),
            }
        )


# Models-from-code entry point: MLflow executes this file at load time to find the model.
mlflow.models.set_model(RecommenderPyfunc())
