"""One recipe per task family on one protocol (cnnkit.recipes.base); one runner for all (cnnkit.recipes.runner).

    recipe = recipe_for("detect")          # DetectionRecipe
    result = runner.train(recipe, cfg)
"""
from cnnkit.errors import unknown_name
from cnnkit.recipes.base import Recipe
from cnnkit.recipes.classification import ClassificationRecipe
from cnnkit.recipes.detection import DetectionRecipe, InstanceRecipe
from cnnkit.recipes.segmentation import SegmentationRecipe

RECIPES: tuple[Recipe, ...] = (ClassificationRecipe(), DetectionRecipe(), InstanceRecipe(), SegmentationRecipe())
BY_TASK: dict[str, Recipe] = {task: recipe for recipe in RECIPES for task in recipe.tasks}


def recipe_for(task: str) -> Recipe:
    """The recipe that trains `task` (binary, multiclass, multilabel, regression, auto, detect, instance, segment)."""
    if task not in BY_TASK:
        raise unknown_name("task", task, [t for t in BY_TASK if t != "classify"])
    return BY_TASK[task]


__all__ = ["RECIPES", "Recipe", "recipe_for"]
