"""Node and DICOMweb settings: command line over environment over the TOML file; destinations
parsed as AET@HOST:PORT or a STOW URL; what is missing said in one sentence."""

from __future__ import annotations

import pytest

from cxr_core.pacs.settings import (
    Destination,
    PacsSettingsError,
    dicomweb_settings,
    node_settings,
)

KEYS = ("CXR_NODE_AET", "CXR_NODE_HOST", "CXR_NODE_PORT", "CXR_NODE_ALLOW", "CXR_NODE_SEND_TO",
        "CXR_NODE_QUEUE", "CXR_NODE_RETRY_S", "CXR_NODE_RETRY_MAX_S", "CXR_DICOMWEB_URL",
        "CXR_DICOMWEB_USER", "CXR_DICOMWEB_PASSWORD", "CXR_PACS_CONFIG")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def test_file_then_environment_then_command_line(tmp_path, monkeypatch):
    config = tmp_path / "pacs.toml"
    config.write_text('[node]\naet = "FROMFILE"\nport = 11200\nallow = ["ORTHANC", "ROUTER"]\n'
                      'send_to = ["PACS@10.0.0.5:104"]\nqueue = "/var/lib/cxr/queue"\n'
                      '[dicomweb]\nurl = "https://pacs.example/dicom-web/"\nuser = "reader"\npassword = "pw"\n')
    monkeypatch.setenv("CXR_PACS_CONFIG", str(config))
    from_file = node_settings()
    assert (from_file.aet, from_file.port, from_file.allow) == ("FROMFILE", 11200, ("ORTHANC", "ROUTER"))
    assert from_file.send_to == (Destination("dicom", aet="PACS", host="10.0.0.5", port=104),)
    assert str(from_file.queue_dir) == "/var/lib/cxr/queue"
    assert dicomweb_settings().url == "https://pacs.example/dicom-web"
    monkeypatch.setenv("CXR_NODE_PORT", "11300")
    monkeypatch.setenv("CXR_NODE_SEND_TO", "https://pacs.example/dicom-web,B@host:11112")
    from_env = node_settings()
    assert from_env.port == 11300 and [d.kind for d in from_env.send_to] == ["stow", "dicom"]
    stow = from_env.send_to[0]
    assert (stow.user, stow.password) == ("reader", "pw")  # the DICOMweb credentials
    assert "pw" not in repr(stow) and stow.name == "https://pacs.example/dicom-web"
    from_cli = node_settings(port=12000, allow=["ONE,TWO"])
    assert from_cli.port == 12000 and from_cli.allow == ("ONE", "TWO")


def test_missing_or_malformed_settings_are_one_sentence(monkeypatch):
    with pytest.raises(PacsSettingsError, match="No calling AE title"):
        node_settings(send_to=["A@h:1"]).validated()
    with pytest.raises(PacsSettingsError, match="No destination"):
        node_settings(allow=["A"]).validated()
    with pytest.raises(PacsSettingsError, match="neither AET@HOST:PORT"):
        node_settings(send_to=["somewhere"])
    monkeypatch.setenv("CXR_NODE_PORT", "eleven")
    with pytest.raises(PacsSettingsError, match="not a number"):
        node_settings()


def test_unreadable_config_file_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(PacsSettingsError, match="not valid TOML"):
        node_settings(bad)
    with pytest.raises(PacsSettingsError, match="cannot be read"):
        node_settings(tmp_path / "absent.toml")
