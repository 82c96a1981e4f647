"""normalize_s3_url / split_s3_uri: the https:// S3 object URLs SageMaker accepts map to bucket and key."""

from __future__ import annotations

import pytest

from opensage.objects.base import normalize_s3_url, split_s3_uri


@pytest.mark.parametrize("url", [
    "https://s3-us-east-1.amazonaws.com/bucket/dir/model.tar.gz",
    "https://s3.us-east-1.amazonaws.com/bucket/dir/model.tar.gz",
    "https://s3.amazonaws.com/bucket/dir/model.tar.gz",
    "https://s3.dualstack.eu-west-1.amazonaws.com/bucket/dir/model.tar.gz",
    "https://bucket.s3.amazonaws.com/dir/model.tar.gz",
    "https://bucket.s3.us-east-1.amazonaws.com/dir/model.tar.gz",
    "https://bucket.s3-us-west-2.amazonaws.com/dir/model.tar.gz",
    "https://BUCKET.S3.AMAZONAWS.COM/dir/model.tar.gz",
    "s3://bucket/dir/model.tar.gz",
])
def test_normalize_s3_url_path_style_and_virtual_hosted_give_bucket_and_key(url):
    assert normalize_s3_url(url) == "s3://bucket/dir/model.tar.gz"
    assert split_s3_uri(url) == ("bucket", "dir/model.tar.gz")


def test_normalize_s3_url_dotted_bucket_and_encoded_key():
    assert split_s3_uri("https://my.data.s3.us-east-1.amazonaws.com/a%20b/c") == ("my.data", "a b/c")


@pytest.mark.parametrize("url", [
    "https://example.com/bucket/key", "http://s3.amazonaws.com/bucket/key", "https://s3.amazonaws.com/",
    "https://s3.amazonaws.com/bucket/key?X-Amz-Signature=x", "ftp://bucket/key",
])
def test_split_s3_uri_not_an_s3_location_raises_value_error(url):
    with pytest.raises(ValueError):
        split_s3_uri(url)
