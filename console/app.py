"""The web console (Streamlit): Predict, Models, Rollouts, Monitoring.

Run with `python -m console ...` (it starts `streamlit run` on this file). Every call to the
system goes through console/services/ (a module per page); a ConsoleError becomes a readable
message, never a stack trace.
"""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from console.services import models, monitoring, predict, rollouts
from console.services.common import ConsoleError, Settings
from don_core.calibration import ACCEPT, LAB, REJECT
from don_core.contract import OUT_OF_DISTRIBUTION_OUTPUT, decision_output
from don_core.schema import DECISION_THRESHOLDS_PPB
from ops.rollout.client import ACTIONS

PAGES = ("Predict", "Models", "Rollouts", "Monitoring")


def main() -> None:
    st.set_page_config(page_title="DON console", layout="wide")
    st.title("DON predictor console")
    try:
        settings = Settings.from_env()
    except ConsoleError as exc:
        st.error(str(exc))
        return
    page = st.radio("Page", PAGES, horizontal=True, key="page", label_visibility="collapsed")
    try:
        {"Predict": predict_page, "Models": models_page, "Rollouts": rollouts_page,
         "Monitoring": monitoring_page}[page](settings)
    except ConsoleError as exc:
        st.error(str(exc))
    except Exception as exc:  # a bug must still read as a message, not a stack trace
        st.error(f"unexpected error: {type(exc).__name__}: {str(exc)[:300]}")


# ---- Predict -----------------------------------------------------------------------------------

def predict_page(settings: Settings) -> None:
    st.header("Predict")
    if not settings.servers:
        raise ConsoleError("no model server configured (--server NAME=URL)")
    with st.spinner("Asking the model servers which versions they serve ..."):
        choices, notes = served_choices(settings)
    labels = [c.label for c in choices]
    chosen = st.selectbox("Model version (the first is the stable one)", labels, key="model")
    choice = choices[labels.index(chosen)]
    for note in notes:
        st.caption(note)
    upload = st.file_uploader("Lab CSV: hsi_id (optional), bands 0..447, vomitoxin_ppb (optional)",
                              type=["csv"], key="upload")
    pasted = st.text_area("... or paste CSV rows with their header, or one spectrum of 448 numbers",
                          key="pasted", height=100)
    if st.button("Predict", key="predict", type="primary"):
        st.session_state.pop("result", None)
        if upload is not None:
            dataset = predict.parse_upload(upload.getvalue(), upload.name)
        else:
            dataset = predict.parse_pasted(pasted)
        with st.spinner(f"Calling {choice.label} for {dataset.rows} row(s) ..."):
            prediction = predict.predict(settings, choice.model, dataset, choice)
        st.session_state["result"] = (dataset, prediction)
    if "result" in st.session_state:
        show_prediction(settings, *st.session_state["result"])


@st.cache_data(ttl=10, show_spinner=False)
def served_choices(settings: Settings):
    """Kept 10 s, else every click would ask every server again (the prediction itself reports
    the version that answered)."""
    return predict.served_choices(settings)


def show_prediction(settings: Settings, dataset, prediction: predict.Prediction) -> None:
    rows = len(prediction.columns["predicted_ppb"])
    track = f" ({prediction.track})" if prediction.track else ""
    st.subheader(f"{rows} predictions from {prediction.model} version {prediction.version}{track}")
    frame = pd.DataFrame(prediction.columns)
    decided = [limit for limit in DECISION_THRESHOLDS_PPB if decision_output(limit) in frame]
    if decided:
        cols = st.columns(len(decided))
        for col, limit in zip(cols, decided):
            counts = frame[decision_output(limit)].value_counts()
            col.metric(f"limit {limit} ppb",
                       " / ".join(f"{counts.get(k, 0)} {k}" for k in (ACCEPT, LAB, REJECT)))
    else:
        st.caption("This version offers no decisions (trained before calibration): ppb only.")
    if OUT_OF_DISTRIBUTION_OUTPUT in frame:
        flagged = int(frame[OUT_OF_DISTRIBUTION_OUTPUT].astype(bool).sum())
        st.caption(f"{flagged} of {rows} spectra flagged out of distribution by the server.")
    st.dataframe(frame, hide_index=True, width="stretch")
    st.download_button("Download results (CSV)", predict.results_csv(prediction),
                       file_name=f"predictions-{prediction.model}-v{prediction.version}.csv",
                       mime="text/csv", key="download")
    band_range = None
    if settings.store and prediction.version.isdigit():
        try:
            with st.spinner("Reading the training data's band-wise range ..."):
                doc = models.evaluation(settings, prediction.model, int(prediction.version))
            band_range = doc["bands"] if doc else None
        except ConsoleError as exc:
            st.caption(f"training range unavailable: {exc}")
    spectra_chart(dataset, band_range)


def spectra_chart(dataset, band_range: dict | None) -> None:
    lines, ranges = predict.spectra_frame(dataset, band_range)
    shown = min(dataset.rows, 50)
    chart = alt.Chart(lines).mark_line(strokeWidth=1).encode(
        x=alt.X("band:Q", title="band"), y=alt.Y("reflectance:Q", title="reflectance"),
        color=alt.Color("spectrum:N", legend=None), tooltip=["spectrum", "band", "reflectance"])
    if ranges is not None:
        area = alt.Chart(ranges).mark_area(opacity=0.25, color="gray").encode(
            x="band:Q", y="min:Q", y2="max:Q")
        chart = area + chart
        outside = sum(n > 0 for n in predict.outside_range(dataset, band_range))
        caption = (f"{shown} uploaded spectra against the training data's band-wise range "
                   f"(gray); {outside} of {dataset.rows} have a band outside it.")
    else:
        caption = f"{shown} uploaded spectra (the training range is not known for this version)."
    st.altair_chart(chart, width="stretch")
    st.caption(caption)


# ---- Models ------------------------------------------------------------------------------------

def models_page(settings: Settings) -> None:
    st.header("Models")
    with st.spinner("Reading the store ..."):
        rows = models.versions_table(settings)
    if not rows:
        st.info(f"no published version in {settings.store}")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    labels = [f"{r['model']} v{r['version']}" for r in rows]
    chosen = st.selectbox("Version", labels, index=len(labels) - 1, key="version")
    show_version(settings, rows[labels.index(chosen)])
    st.subheader("Compare two versions")
    left, right = st.columns(2)
    a = left.selectbox("A", labels, index=0, key="compare_a")
    b = right.selectbox("B", labels, index=len(labels) - 1, key="compare_b")
    with st.spinner(f"Reading {a} and {b} from the store ..."):
        meta_a = models.metadata(settings, rows[labels.index(a)]["model"], rows[labels.index(a)]["version"])
        meta_b = models.metadata(settings, rows[labels.index(b)]["model"], rows[labels.index(b)]["version"])
    st.dataframe(pd.DataFrame(models.compare_metrics(meta_a, meta_b)), hide_index=True, width="stretch")
    for col, row in ((left, rows[labels.index(a)]), (right, rows[labels.index(b)])):
        with col:
            oof_chart(settings, row["model"], row["version"])


def show_version(settings: Settings, row: dict) -> None:
    meta = models.metadata(settings, row["model"], row["version"])
    st.markdown(f"**{row['model']} version {row['version']}**: family {meta['family']}, created "
                f"{meta['created']}, {meta['training_data'].get('rows')} rows of "
                f"`{meta['training_data'].get('source')}` (sha256 "
                f"`{meta['training_data'].get('sha256', '')[:16]}`)")
    cv = meta["metrics"].get("cv") or {}
    st.caption(f"Cross-validation: {cv.get('scheme', 'n/a')}")
    st.dataframe(pd.DataFrame(models.metrics_table(meta)), hide_index=True, width="stretch")
    oof_chart(settings, row["model"], row["version"])


def oof_chart(settings: Settings, model: str, version: int) -> None:
    with st.spinner(f"Reading the out-of-fold predictions of {model} v{version} ..."):
        doc = models.evaluation(settings, model, version)
    if doc is None:
        st.caption(f"{model} v{version} was published before out-of-fold predictions were kept.")
        return
    oof = doc["out_of_fold"]
    frame = pd.DataFrame({"measured ppb": oof["measured_ppb"], "predicted ppb": oof["predicted_ppb"],
                          "hsi_id": oof["ids"]})
    # symlog: log-like axes that still show the many 0 ppb samples
    scale = alt.Scale(type="symlog", constant=10)
    points = alt.Chart(frame).mark_circle(size=25, opacity=0.6).encode(
        x=alt.X("measured ppb:Q", scale=scale), y=alt.Y("predicted ppb:Q", scale=scale),
        tooltip=["hsi_id", "measured ppb", "predicted ppb"])
    rules = pd.DataFrame({"limit": DECISION_THRESHOLDS_PPB})
    vertical = alt.Chart(rules).mark_rule(strokeDash=[4, 4], color="red").encode(x="limit:Q")
    horizontal = alt.Chart(rules).mark_rule(strokeDash=[4, 4], color="red").encode(y="limit:Q")
    st.altair_chart((points + vertical + horizontal).properties(
        title=f"{model} v{version}: out-of-fold predicted vs measured ({oof['repeats']} repeat(s) "
              f"averaged; red: {' and '.join(map(str, DECISION_THRESHOLDS_PPB))} ppb)"), width="stretch")


# ---- Rollouts ----------------------------------------------------------------------------------

def rollouts_page(settings: Settings) -> None:
    st.header("Rollouts")
    client = rollouts.rollout_client(settings)
    with st.spinner(f"Reading ModelRollouts in {client.namespace} ..."):
        items = rollouts.list_rollouts(client)
    if not items:
        st.info(f"no ModelRollouts in namespace {client.namespace}")
        return
    st.dataframe(pd.DataFrame(rollouts.rollout_rows(items)), hide_index=True, width="stretch")
    names = [item["metadata"]["name"] for item in items]
    name = st.selectbox("Rollout", names, key="rollout")
    item = items[names.index(name)]
    status = item.get("status") or {}
    st.markdown(f"**{name}**: phase {status.get('phase', 'Pending')}, step "
                f"{status.get('stepLabel', '-')}, weight {status.get('weight', '-')} %  \n"
                f"{status.get('message') or ''}")
    cols = st.columns(4)
    for col, action in zip(cols, ACTIONS):
        if col.button(action.title(), key=f"action-{action}", disabled=not settings.control,
                      help=None if settings.control else "read-only: the console runs without --control"):
            st.success(rollouts.steer(settings, client, name, action))
    timeline_chart(item)
    last = status.get("lastAnalysis")
    if last:
        st.caption(f"last analysis {last.get('time')}: {last.get('verdict')}")
        st.dataframe(pd.DataFrame([{k: c.get(k) for k in ("name", "value", "threshold", "result", "note")}
                                   for c in last.get("checks", [])]), hide_index=True, width="stretch")
    paired_figures(settings, item)


def paired_figures(settings: Settings, item: dict) -> None:
    """The stable version against the candidate's shadow answers, on the lots the lab measured."""
    st.subheader("Paired lab figures: stable against the candidate in shadow")
    verdict = rollouts.lab_gate_summary(item.get("status") or {})
    if verdict:
        st.markdown(verdict)
    versions = rollouts.rollout_versions(item)
    if not settings.recorder:
        st.caption("no prediction recorder configured (--recorder URL): no paired figures")
        return
    if versions is None:
        st.caption("the rollout's status names no stable and candidate version yet")
        return
    try:
        with st.spinner("Reading the paired figures from the recorder ..."):
            doc = rollouts.pairs(settings, *versions)
    except ConsoleError as exc:
        st.warning(f"paired figures unavailable: {exc}")  # the rollout itself is shown above
        return
    st.markdown(rollouts.pairs_summary(doc))
    if doc["pairs"]:
        st.dataframe(pd.DataFrame(rollouts.pairs_rows(doc)), hide_index=True, width="stretch")
        st.caption(f"Decisions: {doc['decisionRule']}.")


def timeline_chart(item: dict) -> None:
    records = rollouts.timeline(item)
    if not records:
        st.caption("no history yet")
        return
    frame = pd.DataFrame(records)
    frame["time"] = pd.to_datetime(frame["time"])
    chart = alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("time:T"), y=alt.Y("value:Q"),
        tooltip=["time", "event", "step", "weight", "verdict", "figure", "value"]
    ).properties(height=140).facet(row=alt.Row("figure:N", title=None)).resolve_scale(y="independent")
    st.altair_chart(chart)


# ---- Monitoring --------------------------------------------------------------------------------

def monitoring_page(settings: Settings) -> None:
    st.header("Monitoring")
    if settings.recorder:
        lab_results_import(settings)
        try:
            live_accuracy(settings)
        except ConsoleError as exc:   # the recorder away: the servers' drift still shows
            st.error(str(exc))
    else:
        st.info("no prediction recorder configured (--recorder URL): live accuracy is not available")
    if settings.servers:
        st.subheader("Input drift (out-of-distribution rate since each server started; window score of "
                     "its last 100 rows, above 1: the inputs have moved)")
        with st.spinner("Reading the model servers' metrics ..."):
            st.dataframe(pd.DataFrame(monitoring.drift_rates(settings)), hide_index=True, width="stretch")


def lab_results_import(settings: Settings) -> None:
    """The lab's results into the recorder: the whole file or nothing, each bad row named."""
    upload = st.file_uploader("Lab results CSV: sample_id, vomitoxin_ppb; optional method, measured_at "
                              "(ISO 8601, UTC unless an offset is given)", type=["csv"], key="lab_upload")
    if not st.button("Import lab results", key="lab_import", disabled=upload is None):
        return
    try:
        with st.spinner(f"Importing {upload.name} ..."):
            result = monitoring.import_lab_results(settings, upload.getvalue(), upload.name)
    except monitoring.LabResultsRefused as exc:
        shown = "\n".join(f"- {line}" for line in exc.errors[:20])
        more = f"\n- ... {len(exc.errors) - 20} more" if len(exc.errors) > 20 else ""
        st.error(f"{exc}\n\n{shown}{more}")
        return
    except ConsoleError as exc:
        st.error(str(exc))
        return
    st.success(f"{upload.name}: {result['stored']} result(s) stored, {result['duplicates']} already there, "
               f"{result['rejected']} refused")


def live_accuracy(settings: Settings) -> None:
    days = st.selectbox("Span", monitoring.SPANS_DAYS, index=1, format_func=lambda d: f"last {d} days", key="span")
    with st.spinner(f"Reading {days} days of live accuracy from the recorder ..."):
        doc = monitoring.accuracy_series(settings, days)
        windows = monitoring.accuracy_rows(monitoring.accuracy(settings))
    st.subheader(f"Live accuracy per version and day, {doc['from']} to {doc['to']} (UTC)")
    rows = monitoring.series_rows(doc)
    if not rows:
        st.info(f"no prediction recorded from {doc['from']} to {doc['to']}")
    else:
        frame = pd.DataFrame(rows)
        limit = doc["thresholdsPpb"][0]
        # two charts a row; a phone stacks them in this order
        for row in ((("MAE log1p", "MAE of log1p(ppb)", None), (f"false accept @{limit}",
                                                                  f"false-accept rate @{limit} ppb", "%")),
                    (("matched", "lab-matched samples", "d"), ("OOD rate", "out-of-distribution rate", "%"))):
            for container, (column, title, fmt) in zip(st.columns(2), row):
                series_chart(container, frame, column, title, fmt)
        if not frame["matched"].any():
            st.caption("no lab results matched to these predictions yet (import them: "
                       "python -m ops labresults import FILE --url RECORDER)")
        with st.expander("Figures per day"):
            st.dataframe(frame, hide_index=True, width="stretch")
    st.subheader("Current windows (predictions made in the last 1, 7 and 30 days)")
    if windows:
        st.dataframe(pd.DataFrame(windows), hide_index=True, width="stretch")
    else:
        st.info("no lab results matched to predictions yet (import them: python -m ops labresults)")


def series_chart(container, frame: pd.DataFrame, column: str, title: str, fmt: str | None) -> None:
    """One figure per day, a line per model version (days without the figure are left out);
    fmt "%": a share, plotted from 0 to 100 %; "d": a count."""
    data = frame.dropna(subset=[column]).assign(day=lambda f: pd.to_datetime(f["day"]))
    if data.empty:
        container.caption(f"{title}: nothing in this span")
        return
    y_axis = alt.Axis(format=".0%" if fmt == "%" else fmt or ".2~f", **({"tickMinStep": 1} if fmt == "d" else {}))
    chart = alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("day:T", title=None, axis=alt.Axis(format="%b %d", tickCount={"interval": "day", "step": 1})),
        y=alt.Y(field=column, type="quantitative", title=None, axis=y_axis,
                scale=alt.Scale(domain=[0, 1]) if fmt == "%" else alt.Scale(zero=True)),
        color=alt.Color("model version:N", legend=alt.Legend(orient="top", title=None)),
        tooltip=[alt.Tooltip("day:T", format="%Y-%m-%d"), "model version:N",
                 alt.Tooltip(field=column, type="quantitative", format=".3~f"), "matched:Q", "predictions:Q"],
    ).properties(title=title, height=260)
    container.altair_chart(chart, width="stretch")


main()
