"""The Worklist's PACS parts: the 'From PACS' source (DICOMweb search, retrieve, store results
back) and the DICOM node's queue. Shown only when a DICOMweb server / a node queue is configured;
everything they do comes from `cxr_core.pacs`."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import streamlit as st

from cxr_core.base.errors import CxrError
from cxr_core.pacs.dicomweb import DicomWebClient, pull_studies, store_review
from cxr_core.pacs.settings import dicomweb_settings, node_settings

log = logging.getLogger("cxr_app")
MODALITIES = {"CR or DX": "", "CR": "CR", "DX": "DX"}


def _client() -> DicomWebClient | None:
    config = dicomweb_settings()
    return DicomWebClient(config) if config.configured else None


def _pacs_names() -> set[str]:
    """Worklist names of the X-rays retrieved from the PACS (their results may go back)."""
    return st.session_state.setdefault("pacs_names", set())


def _client_or_error():
    """The configured DICOMweb client; None (with the reason on the page when it is an error)
    when there is none."""
    try:
        return _client()
    except CxrError as exc:
        st.error(str(exc))
        return None


def pacs_source(worklist) -> None:
    """'From PACS': search studies (QIDO-RS), retrieve the chosen ones (WADO-RS) into the worklist."""
    client = _client_or_error()
    if client is None:
        return
    with st.expander("From PACS (DICOMweb)", expanded=not worklist.items):
        with st.form("pacs_search"):
            cols = st.columns([1, 1, 2, 1, 1])
            date_from = cols[0].date_input("Studies from", value=date.today() - timedelta(days=7),
                                           key="pacs_from")
            date_to = cols[1].date_input("to", value=date.today(), key="pacs_to")
            text = cols[2].text_input("Patient name, patient ID or accession", key="pacs_text")
            modality = cols[3].selectbox("Modality", list(MODALITIES), key="pacs_modality")
            body_part = cols[4].text_input("Body part", value="CHEST", key="pacs_body")
            if st.form_submit_button("Search PACS"):
                try:
                    st.session_state["pacs_hits"] = client.search_studies(
                        date_from, date_to, text, MODALITIES[modality], body_part)
                except CxrError as exc:
                    st.error(str(exc))
        hits = st.session_state.get("pacs_hits")
        if hits is None:
            return
        if not hits:
            st.info("No CR/DX study matches the search.")
            return
        labels = {f"{h.study_date or '-'} · {h.patient_name or '-'} ({h.patient_id or '-'}) · "
                  f"{h.accession or '-'} · {h.description or h.modalities}": h.study_uid for h in hits}
        st.dataframe(pd.DataFrame([{"study date": h.study_date, "patient": h.patient_name,
                                    "patient ID": h.patient_id, "accession": h.accession,
                                    "description": h.description, "modalities": h.modalities,
                                    "images": h.instances} for h in hits]), hide_index=True)
        chosen = st.multiselect("Studies to retrieve", list(labels), key="pacs_chosen")
        if st.button(f"Retrieve {len(chosen)} stud{'y' if len(chosen) == 1 else 'ies'}",
                     disabled=not chosen, key="pacs_retrieve"):
            try:
                with st.spinner("Retrieving from the PACS..."):
                    files = pull_studies(client, [labels[c] for c in chosen])
            except CxrError as exc:
                st.error(str(exc))
                return
            if not files:
                st.warning("The chosen studies hold no CR or DX image.")
                return
            _pacs_names().update(name for name, _ in files)
            worklist.add(files)
            st.success(f"{len(files)} X-ray(s) added to the worklist.")


def _store(client: DicomWebClient, items) -> tuple[int, list[str]]:
    stored, errors = st.session_state.setdefault("pacs_stored", set()), []
    count = 0
    for item in items:
        try:
            count += store_review(client, item.review)
            stored.add(item.name)
        except CxrError as exc:
            errors.append(str(exc))
    return count, errors


def pacs_store_buttons(worklist, item) -> None:
    """'Store in PACS' for the open study and for every reviewed study retrieved from the PACS."""
    names = _pacs_names()
    if item.name not in names:
        return
    client = _client_or_error()
    if client is None:
        return
    stored = st.session_state.setdefault("pacs_stored", set())
    ready = [i for i in worklist.items if i.name in names and i.review is not None
             and i.status in ("ready", "refused")]
    label = "Store results in PACS" + (" again" if item.name in stored else "")
    if st.button(label, key="pacs_store_one", help="SR of the findings and the report's Secondary "
                 "Capture, into this study on the PACS (STOW-RS)"):
        with st.spinner("Storing..."):
            count, errors = _store(client, [item])
        for error in errors:
            st.error(error)
        if count:
            st.success(f"{count} object(s) stored in the study on the PACS.")
    pending = [i for i in ready if i.name not in stored]
    if len(ready) > 1 and st.button(f"Store results of all {len(pending)} unsent PACS studies",
                                    key="pacs_store_all", disabled=not pending):
        with st.spinner("Storing..."):
            count, errors = _store(client, pending)
        for error in errors[:3]:
            st.error(error)
        st.success(f"{count} object(s) stored on the PACS.")


def node_queue_panel() -> None:
    """The DICOM node's queue (when a node keeps one here): what waits, what failed to send."""
    from cxr_core.pacs.queue import DiskQueue

    try:
        root = node_settings().queue_dir
    except CxrError:
        return
    if not (Path(root) / "items").is_dir():
        return
    queue = DiskQueue(root)
    counts = queue.counts()
    with st.expander(f"DICOM node queue: {counts['received']} to review, {counts['reviewed']} to send, "
                     f"{counts['sent']} sent"):
        rows = queue.rows(limit=100)
        if not rows:
            st.caption("Empty.")
            return
        st.dataframe(pd.DataFrame([{
            "item": r.key, "status": r.status, "received": pd.to_datetime(r.received, unit="s"),
            "send attempts": r.attempts, "last error": r.last_error, "refused": r.refused}
            for r in rows]), hide_index=True)
