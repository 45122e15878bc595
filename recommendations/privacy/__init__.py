"""Shoppers' data rights: erase (`erasure`), export (`access`), and whom a request names (`subjects`).

Re-exports every name callers read as privacy.X.
"""

from recommendations.privacy.access import FORMAT, VERSION, export
from recommendations.privacy.erasure import (
    BATCH_SIZE,
    delete_cache_keys,
    erase,
    erase_user,
    on_user_deleted,
    shoppers_of_user,
)
from recommendations.privacy.subjects import InvalidSubjects, Subjects, resolve, subject_hash

__all__ = [
    "BATCH_SIZE",
    "FORMAT",
    "VERSION",
    "InvalidSubjects",
    "Subjects",
    "delete_cache_keys",
    "erase",
    "erase_user",
    "export",
    "on_user_deleted",
    "resolve",
    "shoppers_of_user",
    "subject_hash",
]
