"""Push: recommendations sent to shoppers by e-mail, in flows staff define in the admin (docs/email.md).

One idea per module, each importing only those below it (a contract in pyproject.toml says so):

    views      the click link (/e/c/<token>/) and the unsubscribe link (/e/u/<token>/: one-click POST, preferences)
    sending    send_due_messages: who is due, caps, the idempotent claim, the send, the outcome on each row
    compose    the products through the serving pipeline (the flow's placement), and the message both bodies render
    triggers   each trigger kind: who is due, for which period, since when, with which products (viewed, in the cart,
               back in stock, cheaper, bought)
    timing     quiet hours and the best hour in the shopper's time zone; the language of their e-mail
    consent    may this shopper get marketing e-mail, at which address; unsubscribe and preferences
    tokens     the signed tokens of the click and unsubscribe links, and the links themselves

This `__init__` imports nothing: the lower modules are imported from low layers (tracking's, ground), which must not
run the higher ones (sending imports serving).
"""
