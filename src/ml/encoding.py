"""What is learned from the training rows before the estimator: category codes, text, missing numbers, scales.

`TableEncoder` is the first step of the model train fits, so everything it
learns is fitted on training rows only, inside each cross-validation fold, and
travels with the logged model to predict and serve. It is scikit-learn's
ColumnTransformer over scikit-learn's encoders, routed by what each column holds
and what the estimator declares it needs (`src.ml.catalog.Inputs`):

- numbers: as they are for an estimator that takes missing values; otherwise
  the median fills a gap and a column of its own flags it, and with `scaled`
  they are standardised;
- text with at most `max_categories` values: categories, as the estimator takes
  them (a pandas category column for gradient boosting, which splits on
  categories natively; a code per category; or a 0/1 column per category);
- free text (most values differ and hold spaces, such as names): the counts of
  its `text_words` most frequent words;
- other text with many values (a town, a product code): target encoding,
  cross-fitted on the training rows so a row's own label never leaks into it.

A category, word or value never seen in training is scored, not refused: it
becomes missing (categories), no word counted, or the mean target.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

MAX_CATEGORIES = 40
"""Text columns with at most this many values in the training rows are categories (skrub's threshold too)."""

TEXT_WORDS = 20
"""Words counted per free-text column: the most frequent in the training rows."""

FREE_TEXT_SHARE = 0.5
"""A text column is free text when at least this share of its values differ and hold a space."""

ROUTES = ("numbers", "categories", "free_text", "many_values")
"""How a column is encoded (see the module's docstring)."""


class Categories(TransformerMixin, BaseEstimator):
    """Text columns as pandas category columns over the categories of the training rows; others become missing."""

    def fit(self, table: pd.DataFrame, y: Any = None) -> Categories:
        """Learn each column's categories (sorted) from the training rows."""
        self.categories_ = {
            str(name): sorted(str(value) for value in table[name].dropna().unique()) for name in table.columns
        }
        self.feature_names_in_ = np.array(list(self.categories_), dtype=object)
        return self

    def transform(self, table: pd.DataFrame) -> pd.DataFrame:
        """The columns as categories; a value not seen in training is missing."""
        check_is_fitted(self, "categories_")
        return pd.DataFrame(
            {
                name: pd.Categorical.from_codes(pd.Index(known).get_indexer(table[name]), categories=known)
                for name, known in self.categories_.items()
            },
            index=table.index,
        )

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The columns' names, unchanged."""
        return self.feature_names_in_


class Words(TransformerMixin, BaseEstimator):
    """A free-text column as the counts of its most frequent words in the training rows.

    Args:
        words: How many words to count.
    """

    def __init__(self, words: int = TEXT_WORDS) -> None:
        self.words = words

    def fit(self, table: pd.DataFrame, y: Any = None) -> Words:
        """Learn the column's most frequent words (at least two rows hold each)."""
        from sklearn.feature_extraction.text import CountVectorizer

        self.column_ = str(table.columns[0])
        self.vectorizer_ = CountVectorizer(max_features=self.words, min_df=2, dtype=np.float64)
        try:
            self.vectorizer_.fit(self._text(table))
            self.vocabulary_ = [str(word) for word in self.vectorizer_.get_feature_names_out()]
        except ValueError:  # no word in two rows
            self.vocabulary_ = []
        self.feature_names_in_ = np.array([self.column_], dtype=object)
        return self

    def transform(self, table: pd.DataFrame) -> pd.DataFrame:
        """One column per word, `<column>_word_<word>`: how often it appears in each row."""
        check_is_fitted(self, "vocabulary_")
        names = self.get_feature_names_out()
        if not self.vocabulary_:
            return pd.DataFrame(index=table.index, columns=names, dtype="float64")
        counts = self.vectorizer_.transform(self._text(table)).toarray()
        return pd.DataFrame(counts, index=table.index, columns=names)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """`<column>_word_<word>` for each word counted."""
        return np.array([f"{self.column_}_word_{word}" for word in self.vocabulary_], dtype=object)

    def _text(self, table: pd.DataFrame) -> list[str]:
        values = table.iloc[:, 0]
        return values.astype(object).where(values.notna(), "").astype(str).tolist()


class TableEncoder(TransformerMixin, BaseEstimator):
    """Encode a table of numbers and text as one estimator needs it, learning only from the rows it is fitted on.

    Args:
        task: `classification` or `regression` (target encoding needs to know).
        categories: How categories reach the estimator: `native`, `ordinal` or `one_hot`.
        missing_values: Whether the estimator takes missing numbers as they are.
        scaled: Whether numbers (and encoded text) must be standardised.
        max_categories: Text with at most this many values in the training rows is categories.
        text_words: Words counted per free-text column.
        random_state: The seed of target encoding's folds.
    """

    def __init__(
        self,
        task: str = "classification",
        categories: str = "native",
        missing_values: bool = True,
        scaled: bool = False,
        max_categories: int = MAX_CATEGORIES,
        text_words: int = TEXT_WORDS,
        random_state: int | None = None,
    ) -> None:
        self.task = task
        self.categories = categories
        self.missing_values = missing_values
        self.scaled = scaled
        self.max_categories = max_categories
        self.text_words = text_words
        self.random_state = random_state

    @classmethod
    def for_estimator(cls, inputs: Any, task: str, random_state: int) -> TableEncoder:
        """The encoder an estimator's declared `Inputs` ask for."""
        return cls(task, inputs.categories, inputs.missing_values, inputs.scaled, random_state=random_state)

    def fit(self, table: pd.DataFrame, y: Any = None) -> TableEncoder:
        """Route each column by what the training rows hold, and fit its encoder."""
        self.fit_transform(table, y)
        return self

    def fit_transform(self, table: pd.DataFrame, y: Any = None, **fit_params: Any) -> pd.DataFrame:
        """Fit on the training rows and encode them; target encoding is cross-fitted, so no row sees its own label."""
        self.routes_ = {route: [] for route in ROUTES}
        for name in table.columns:
            self.routes_[self._route(table[name])].append(str(name))
        self.transformer_ = self._column_transformer(self.routes_)
        self.feature_names_in_ = np.array([str(name) for name in table.columns], dtype=object)
        return self.transformer_.fit_transform(table, y)

    def transform(self, table: pd.DataFrame) -> pd.DataFrame:
        """Encode rows as the training rows were; what training never saw is scored, not refused."""
        check_is_fitted(self, "transformer_")
        return self.transformer_.transform(table)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The names of the encoded columns."""
        check_is_fitted(self, "transformer_")
        return self.transformer_.get_feature_names_out()

    def _column_transformer(self, routes: dict[str, list[str]]) -> Any:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.model_selection import KFold, StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder

        numbers: Any = "passthrough"
        if not self.missing_values:
            imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
            numbers = make_pipeline(imputer, StandardScaler()) if self.scaled else imputer
        elif self.scaled:
            numbers = StandardScaler()
        if self.categories == "native":
            categories: Any = Categories()
        elif self.categories == "ordinal":
            categories = OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
            )
        else:
            categories = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        regression = self.task == "regression"
        folds = (KFold if regression else StratifiedKFold)(n_splits=5, shuffle=True, random_state=self.random_state)
        many: Any = TargetEncoder(target_type="continuous" if regression else "auto", cv=folds)
        if self.scaled:
            many = make_pipeline(many, StandardScaler())
        parts = [
            ("numbers", numbers, routes["numbers"]),
            ("categories", categories, routes["categories"]),
            ("many_values", many, routes["many_values"]),
        ]
        parts += [(f"words_{name}", Words(self.text_words), [name]) for name in routes["free_text"]]
        transformer = ColumnTransformer(
            [part for part in parts if part[2]], remainder="drop", verbose_feature_names_out=False
        )
        return transformer.set_output(transform="pandas")

    def _route(self, values: pd.Series) -> str:
        """numbers, categories, free_text or many_values: how a column is encoded, from the training rows."""
        if pd.api.types.is_numeric_dtype(values):
            return "numbers"
        present = values.dropna()
        distinct = present.nunique()
        if distinct <= self.max_categories:
            return "categories"
        spaced = present.astype(str).str.contains(" ", regex=False).mean() if len(present) else 0.0
        if distinct >= FREE_TEXT_SHARE * len(present) and spaced >= FREE_TEXT_SHARE:
            return "free_text"
        return "many_values"
