"""The web console (Streamlit): Predict, Models, Rollouts, Monitoring.

Run with `python -m console ...` (it starts `streamlit run` on this file). Every call to the
system goes through console/services.py; a ConsoleError becomes a readable message, never a
stack trace.
"""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from console import services as svc

PAGES = ("Predict", "Models", "Rollouts", "Monitoring")
LIMITS = (1000, 5000)


def main() -> None:
    st.set_page_config(page_title="DON console", layout="wide")
    st.title("DON predictor console")
    try:
        settings = svc.Settings.from_env()
    except svc.ConsoleError as exc:
        st.error(str(exc))
        return
    page = st.radio("Page", PAGES, horizontal=True, key="page", label_visibility="collapsed")
    try:
        {"Predict": predict_page, "Models": models_page, "Rollouts": rollouts_page,
         "Monitoring": monitoring_page}[page](settings)
    except svc.ConsoleError as exc:
        st.error(str(exc))
    except Exception as exc:  # a bug must still read as a message, not a stack trace
        st.error(f"unexpected error: {type(exc).__name__}: {str(exc)[:300]}")


# ---- Predict -----------------------------------------------------------------------------------

def predict_page(settings: svc.Settings) -> None:
    st.header("Predict")
    if not settings.servers:
        raise svc.ConsoleError("no model server configured (--server NAME=URL)")
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
            dataset = svc.parse_upload(upload.getvalue(), upload.name)
        else:
            dataset = svc.parse_pasted(pasted)
        with st.spinner(f"Calling {choice.label} for {dataset.rows} row(s) ..."):
            prediction = svc.predict(settings, choice.model, dataset, choice)
        st.session_state["result"] = (dataset, prediction)
    if "result" in st.session_state:
        show_prediction(settings, *st.session_state["result"])


@st.cache_data(ttl=10, show_spinner=False)
def served_choices(settings: svc.Settings):
    """Kept 10 s, else every click would ask every server again (the prediction itself reports
    the version that answered)."""
    return svc.served_choices(settings)


def show_prediction(settings: svc.Settings, dataset, prediction: svc.Prediction) -> None:
    rows = len(prediction.columns["predicted_ppb"])
    track = f" ({prediction.track})" if prediction.track else ""
    st.subheader(f"{rows} predictions from {prediction.model} version {prediction.version}{track}")
    frame = pd.DataFrame(prediction.columns)
    decided = [c for c in svc.DECISIONS if c in frame]
    if decided:
        cols = st.columns(len(decided))
        for col, name in zip(cols, decided):
            counts = frame[name].value_counts()
            col.metric(f"limit {name.split('_')[1]} ppb",
                       " / ".join(f"{counts.get(k, 0)} {k}" for k in ("accept", "lab", "reject")))
    else:
        st.caption("This version offers no decisions (trained before calibration): ppb only.")
    if "out_of_distribution" in frame:
        flagged = int(frame["out_of_distribution"].astype(bool).sum())
        st.caption(f"{flagged} of {rows} spectra flagged out of distribution by the server.")
    st.dataframe(frame, hide_index=True, width="stretch")
    st.download_button("Download results (CSV)", svc.results_csv(prediction),
                       file_name=f"predictions-{prediction.model}-v{prediction.version}.csv",
                       mime="text/csv", key="download")
    band_range = None
    if settings.store and prediction.version.isdigit():
        try:
            with st.spinner("Reading the training data's band-wise range ..."):
                doc = svc.evaluation(settings, prediction.model, int(prediction.version))
            band_range = doc["bands"] if doc else None
        except svc.ConsoleError as exc:
            st.caption(f"training range unavailable: {exc}")
    spectra_chart(dataset, band_range)


def spectra_chart(dataset, band_range: dict | None) -> None:
    lines, ranges = svc.spectra_frame(dataset, band_range)
    shown = min(dataset.rows, 50)
    chart = alt.Chart(lines).mark_line(strokeWidth=1).encode(
        x=alt.X("band:Q", title="band"), y=alt.Y("reflectance:Q", title="reflectance"),
        color=alt.Color("spectrum:N", legend=None), tooltip=["spectrum", "band", "reflectance"])
    if ranges is not None:
        area = alt.Chart(ranges).mark_area(opacity=0.25, color="gray").encode(
            x="band:Q", y="min:Q", y2="max:Q")
        chart = area + chart
        outside = sum(n > 0 for n in svc.outside_range(dataset, band_range))
        caption = (f"{shown} uploaded spectra against the training data's band-wise range "
                   f"(gray); {outside} of {dataset.rows} have a band outside it.")
    else:
        caption = f"{shown} uploaded spectra (the training range is not known for this version)."
    st.altair_chart(chart, width="stretch")
    st.caption(caption)


# ---- Models ------------------------------------------------------------------------------------

def models_page(settings: svc.Settings) -> None:
    st.header("Models")
    with st.spinner("Reading the store ..."):
        rows = svc.versions_table(settings)
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
        meta_a = svc.metadata(settings, rows[labels.index(a)]["model"], rows[labels.index(a)]["version"])
        meta_b = svc.metadata(settings, rows[labels.index(b)]["model"], rows[labels.index(b)]["version"])
    st.dataframe(pd.DataFrame(svc.compare_metrics(meta_a, meta_b)), hide_index=True, width="stretch")
    for col, row in ((left, rows[labels.index(a)]), (right, rows[labels.index(b)])):
        with col:
            oof_chart(settings, row["model"], row["version"])


def show_version(settings: svc.Settings, row: dict) -> None:
    meta = svc.metadata(settings, row["model"], row["version"])
    st.markdown(f"**{row['model']} version {row['version']}**: family {meta['family']}, created "
                f"{meta['created']}, {meta['training_data'].get('rows')} rows of "
                f"`{meta['training_data'].get('source')}` (sha256 "
                f"`{meta['training_data'].get('sha256', '')[:16]}`)")
    cv = meta["metrics"].get("cv") or {}
    st.caption(f"Cross-validation: {cv.get('scheme', 'n/a')}")
    st.dataframe(pd.DataFrame(svc.metrics_table(meta)), hide_index=True, width="stretch")
    oof_chart(settings, row["model"], row["version"])


def oof_chart(settings: svc.Settings, model: str, version: int) -> None:
    with st.spinner(f"Reading the out-of-fold predictions of {model} v{version} ..."):
        doc = svc.evaluation(settings, model, version)
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
    rules = pd.DataFrame({"limit": LIMITS})
    vertical = alt.Chart(rules).mark_rule(strokeDash=[4, 4], color="red").encode(x="limit:Q")
    horizontal = alt.Chart(rules).mark_rule(strokeDash=[4, 4], color="red").encode(y="limit:Q")
    st.altair_chart((points + vertical + horizontal).properties(
        title=f"{model} v{version}: out-of-fold predicted vs measured ({oof['repeats']} repeat(s) "
              f"averaged; red: 1000 and 5000 ppb)"), width="stretch")


# ---- Rollouts ----------------------------------------------------------------------------------

def rollouts_page(settings: svc.Settings) -> None:
    st.header("Rollouts")
    kube, namespace = svc.kube_client(settings)
    with st.spinner(f"Reading ModelRollouts in {namespace} ..."):
        items = svc.list_rollouts(kube, namespace)
    if not items:
        st.info(f"no ModelRollouts in namespace {namespace}")
        return
    st.dataframe(pd.DataFrame(svc.rollout_rows(items)), hide_index=True, width="stretch")
    names = [item["metadata"]["name"] for item in items]
    name = st.selectbox("Rollout", names, key="rollout")
    item = items[names.index(name)]
    status = item.get("status") or {}
    st.markdown(f"**{name}**: phase {status.get('phase', 'Pending')}, step "
                f"{status.get('stepLabel', '-')}, weight {status.get('weight', '-')} %  \n"
                f"{status.get('message') or ''}")
    cols = st.columns(4)
    for col, action in zip(cols, ("pause", "resume", "promote", "abort")):
        if col.button(action.title(), key=f"action-{action}", disabled=not settings.control,
                      help=None if settings.control else "read-only: the console runs without --control"):
            st.success(svc.steer(settings, kube, namespace, name, action))
    timeline_chart(item)
    last = status.get("lastAnalysis")
    if last:
        st.caption(f"last analysis {last.get('time')}: {last.get('verdict')}")
        st.dataframe(pd.DataFrame([{k: c.get(k) for k in ("name", "value", "threshold", "result", "note")}
                                   for c in last.get("checks", [])]), hide_index=True, width="stretch")
    paired_figures(settings, item)


def paired_figures(settings: svc.Settings, item: dict) -> None:
    """The stable version against the candidate's shadow answers, on the lots the lab measured."""
    st.subheader("Paired lab figures: stable against the candidate in shadow")
    versions = svc.rollout_versions(item)
    if not settings.recorder:
        st.caption("no prediction recorder configured (--recorder URL): no paired figures")
        return
    if versions is None:
        st.caption("the rollout's status names no stable and candidate version yet")
        return
    try:
        with st.spinner("Reading the paired figures from the recorder ..."):
            doc = svc.pairs(settings, *versions)
    except svc.ConsoleError as exc:
        st.warning(f"paired figures unavailable: {exc}")  # the rollout itself is shown above
        return
    st.markdown(svc.pairs_summary(doc))
    if doc["pairs"]:
        st.dataframe(pd.DataFrame(svc.pairs_rows(doc)), hide_index=True, width="stretch")
        st.caption(f"Decisions: {doc['decisionRule']}.")


def timeline_chart(item: dict) -> None:
    records = svc.timeline(item)
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

def monitoring_page(settings: svc.Settings) -> None:
    st.header("Monitoring")
    if settings.recorder:
        lab_results_import(settings)
        try:
            live_accuracy(settings)
        except svc.ConsoleError as exc:   # the recorder away: the servers' drift still shows
            st.error(str(exc))
    else:
        st.info("no prediction recorder configured (--recorder URL): live accuracy is not available")
    if settings.servers:
        st.subheader("Input drift (out-of-distribution rate since each server started; window score of "
                     "its last 100 rows, above 1: the inputs have moved)")
        with st.spinner("Reading the model servers' metrics ..."):
            st.dataframe(pd.DataFrame(svc.drift_rates(settings)), hide_index=True, width="stretch")


def lab_results_import(settings: svc.Settings) -> None:
    """The lab's results into the recorder: the whole file or nothing, each bad row named."""
    upload = st.file_uploader("Lab results CSV: sample_id, vomitoxin_ppb; optional method, measured_at "
                              "(ISO 8601, UTC unless an offset is given)", type=["csv"], key="lab_upload")
    if not st.button("Import lab results", key="lab_import", disabled=upload is None):
        return
    try:
        with st.spinner(f"Importing {upload.name} ..."):
            result = svc.import_lab_results(settings, upload.getvalue(), upload.name)
    except svc.LabResultsRefused as exc:
        shown = "\n".join(f"- {line}" for line in exc.errors[:20])
        more = f"\n- ... {len(exc.errors) - 20} more" if len(exc.errors) > 20 else ""
        st.error(f"{exc}\n\n{shown}{more}")
        return
    except svc.ConsoleError as exc:
        st.error(str(exc))
        return
    st.success(f"{upload.name}: {result['stored']} result(s) stored, {result['duplicates']} already there, "
               f"{result['rejected']} refused")


def live_accuracy(settings: svc.Settings) -> None:
    days = st.selectbox("Span", svc.SPANS_DAYS, index=1, format_func=lambda d: f"last {d} days", key="span")
    with st.spinner(f"Reading {days} days of live accuracy from the recorder ..."):
        doc = svc.accuracy_series(settings, days)
        windows = svc.accuracy_rows(svc.accuracy(settings))
    st.subheader(f"Live accuracy per version and day, {doc['from']} to {doc['to']} (UTC)")
    rows = svc.series_rows(doc)
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
