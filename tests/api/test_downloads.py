"""Download names survive any server or mailbox name."""

from urllib.parse import unquote

from app.api.downloads import attachment


def test_a_non_latin_name_gives_a_header_http_can_carry():
    name = 'Почта "Zürich" 東京.mbox'
    value = attachment(name)
    value.encode("latin-1")  # what Starlette does with header values; must not raise
    fallback = value.split('filename="')[1].split('";')[0]
    assert fallback.isascii() and '"' not in fallback and fallback.endswith(".mbox")
    encoded = value.split("filename*=UTF-8''")[1]
    assert unquote(encoded) == name


def test_a_plain_name_is_kept_as_is():
    assert attachment("EXCH-MBX01-disk2000-rp7.img").startswith(
        'attachment; filename="EXCH-MBX01-disk2000-rp7.img";'
    )
