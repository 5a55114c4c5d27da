"""The cost-frugal search (:mod:`costsched.sweep.cfo`) as a Ray Tune ``Searcher``."""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from costsched.sweep.cfo import CostFrugalSearch


class CostFrugalSearcher(Searcher):
    """Suggests :class:`CostFrugalSearch`'s points and feeds it each trial's final
    ``metric`` (minimised); an errored trial counts as no better than the incumbent."""

    def __init__(self, search: CostFrugalSearch, *, metric: str):
        super().__init__(metric=metric, mode="min")
        self.search = search
        self.points: dict[str, dict[str, Any]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        point = self.search.suggest()
        if point is None:
            return None if self.points else Searcher.FINISHED
        self.points[trial_id] = point
        return dict(point)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        point = self.points.pop(trial_id, None)
        if point is None:
            return
        value = (result or {}).get(self.metric)
        self.search.observe(point, float("inf") if error or value is None else float(value))

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space is the sweep's own, given to the search at construction

    def get_state(self) -> dict:
        return {"search": self.search, "points": dict(self.points)}

    def set_state(self, state: dict) -> None:
        self.search, self.points = state["search"], state["points"]

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
