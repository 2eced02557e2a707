"""metapose: few-shot domain adaptation of top-down human pose estimators by meta-learned init."""

__version__ = "0.1.0"
