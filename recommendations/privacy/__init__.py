"""Shoppers' data rights: erase (`erasure`), export (`access`), and whom a request names (`subjects`).

Re-exports every name callers read as privacy.X.
"""

from recommendations.privacy.access import FORMAT, VERSION, export
from recommendations.privacy.consent import forget_deleted_user_choice, set_account_choice, set_consent
from recommendations.privacy.erasure import (
    BATCH_SIZE,
    delete_cache_keys,
    erase,
    erase_user,
    on_user_deleted,
    shoppers_of_user,
)
from recommendations.privacy.subjects import (
    IDS_PER_STATEMENT,
    MAX_IDS,
    InvalidSubjects,
    Subjects,
    resolve,
    subject_hash,
    subject_hashes,
)

__all__ = [
    "BATCH_SIZE",
    "FORMAT",
    "IDS_PER_STATEMENT",
    "MAX_IDS",
    "VERSION",
    "InvalidSubjects",
    "Subjects",
    "delete_cache_keys",
    "erase",
    "erase_user",
    "export",
    "forget_deleted_user_choice",
    "on_user_deleted",
    "resolve",
    "set_account_choice",
    "set_consent",
    "shoppers_of_user",
    "subject_hash",
    "subject_hashes",
]
