import logging

from tracker.logging_filters import redact


def test_tokens_and_share_secrets_are_redacted_from_log_records(caplog):
    caplog.set_level(logging.INFO)
    secret = "trk_0123abcd_" + "Z" * 43
    share = "shr_" + "q" * 32
    logging.getLogger("django.request").warning("Not Found: /s/%s/ with %s", share, secret)
    text = caplog.records[-1].getMessage()
    assert share not in text and secret not in text
    assert "shr_[redacted]" in text and "trk_0123abcd_[redacted]" in text
    assert redact("nothing secret here") == "nothing secret here"
