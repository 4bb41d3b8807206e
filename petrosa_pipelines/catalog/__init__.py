"""Dataset schemas and descriptions: the single source the assets, checks and docs read."""

from petrosa_pipelines.catalog.schemas import DATASETS, Column, DatasetSchema, dataset_schema

__all__ = ["DATASETS", "Column", "DatasetSchema", "dataset_schema"]
