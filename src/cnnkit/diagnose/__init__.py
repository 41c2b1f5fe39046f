"""Diagnosis of a training run: curves now; the verdict, confusion and Grad-CAM come with issue 5."""
