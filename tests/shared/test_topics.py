import pytest

from shared.errors import ProtocolError
from shared.topics import ParsedTopic, Topics

SHA = "ab" * 32


def test_topics_build_from_one_template():
    t = Topics()
    assert t.stats("dev-1") == "harken/v1/dev/dev-1/stats"
    assert t.desired("dev-1") == "harken/v1/dev/dev-1/desired"
    assert t.receipt("dev-1") == "harken/v1/dev/dev-1/receipt"
    assert t.model(SHA) == f"harken/v1/model/{SHA}"
    assert t.chunk(SHA, 3) == f"harken/v1/model/{SHA}/3"
    assert t.shared_filter("collectors", "stats") == "$share/collectors/harken/v1/dev/+/stats"
    assert Topics("acme/h/").filter("model") == "acme/h/model/#"


@pytest.mark.parametrize("kind", ["stats", "state", "event", "desired", "receipt"])
def test_parse_inverts_build(kind):
    t = Topics("x/y")
    assert t.parse(t.build(kind, device="d.1")) == ParsedTopic(kind=kind, device="d.1")


def test_parse_model_and_chunk_and_alert():
    t = Topics()
    assert t.parse(t.model(SHA)) == ParsedTopic(kind="model", sha256=SHA)
    assert t.parse(t.chunk(SHA, 12)) == ParsedTopic(kind="chunk", sha256=SHA, chunk=12)
    assert t.parse(t.alert("a-1")).alert_id == "a-1"


@pytest.mark.parametrize("topic", ["other/v1/dev/d/stats", "harken/v1/dev/d/unknown", "harken/v1/dev/d",
                                   "harken/v1/model/xyz", "harken/v1/dev/a b/stats"])
def test_parse_rejects_foreign_topics(topic):
    with pytest.raises(ProtocolError) as info:
        Topics().parse(topic)
    assert info.value.code == "bad_topic"


@pytest.mark.parametrize("device", ["a/b", "+", "#", "", "x" * 65])
def test_device_ids_that_would_break_topics_are_refused(device):
    with pytest.raises(ValueError):
        Topics().stats(device)
