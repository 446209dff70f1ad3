"""``SearchPanel``: "what looks like this spectrum?" and "what looks like nothing else?".

A thin front door over ``SpectrumIndex``: pick a spectrum by target id or from the most
anomalous ones, and see its k nearest neighbours drawn over it (hvplot), their metadata in a
table, and where they all sit on a 2-D map of the latent space (principal components, coloured
by class). Redshift-range and class controls become a Milvus filter on the search.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import numpy as np

from labkit.errors import LabkitError, ParameterError
from labkit.vectors import FIELD_NAMES, Hit, LatentProjection, SpectrumIndex, build_filter

MAX_MAP_POINTS = 5000  # background points on the latent map; query and neighbours always shown
ANOMALY_CHOICES = 25


class SearchPanel:
    """The similarity and anomaly explorer that ``%labkit search`` shows.

    ``index`` is a ``SpectrumIndex`` (or its URI). ``spectra`` (a ``Spectra`` whose
    ``meta['targetid']`` matches the index ids) supplies the fluxes drawn; without it a
    ``model`` with ``decode`` draws model spectra of the latent vectors, and without either the
    latent vectors themselves are drawn. Drive it from Python as from the screen: ``show(id)``,
    or set the widgets' values (``target``, ``anomalies``, ``k``, ``z_range``, ``classes``);
    ``hits`` and ``neighbours`` hold the last answer.
    """

    def __init__(
        self,
        index: SpectrumIndex | str,
        spectra: Any = None,
        model: Any = None,
        *,
        k: int = 5,
        class_field: str | None = None,
        max_points: int = MAX_MAP_POINTS,
        seed: int = 0,
    ):
        import panel as pn

        self.index = index if isinstance(index, SpectrumIndex) else SpectrumIndex(index)
        self.spectra = spectra
        self.model = model
        self._rows = _rows_by_id(spectra)
        overview = self.index.columns(FIELD_NAMES, vectors=True)
        if len(overview["id"]) < 2:
            raise ParameterError(
                f"the index {self.index.endpoint.shown} holds {len(overview['id'])} spectra; "
                "the explorer needs at least 2"
            )
        self.class_field = class_field or _class_field(overview)
        if self.class_field not in FIELD_NAMES:
            raise ParameterError(f"class_field must be one of {FIELD_NAMES}")
        self.projection = LatentProjection(overview["vector"])
        self._map = _map_points(overview, self.projection, self.class_field, max_points, seed)
        self.query_id: int | None = None
        self.query_xy: np.ndarray | None = None
        self.hits: list[Hit] = []
        self.neighbours = None  # pandas DataFrame of the last answer

        z = overview["z"][np.isfinite(overview["z"])]
        z_low, z_high = (float(z.min()), float(z.max())) if z.size else (0.0, 1.0)
        self._z_extent = (z_low, z_high)
        classes = sorted({str(c) for c in overview[self.class_field]})
        # searches run on Enter / release, not on every keystroke or slider step
        self.target = widgets.Text(
            description="target id", placeholder="e.g. 39627…", continuous_update=False
        )
        self.go = widgets.Button(description="Neighbours", button_style="primary")
        self.anomalies = widgets.Dropdown(
            options=[("—", None)] + _anomaly_options(self.index),
            value=None,
            description="anomalies",
        )
        self.k = widgets.BoundedIntText(value=int(k), min=1, max=100, description="k")
        self.z_range = widgets.FloatRangeSlider(
            value=self._z_extent,
            min=z_low,
            max=z_high if z_high > z_low else z_low + 1,
            step=(z_high - z_low) / 200 or 0.01,
            description="redshift",
            readout_format=".3f",
            continuous_update=False,
        )
        self.classes = widgets.SelectMultiple(
            options=classes, value=tuple(classes), description=self.class_field, rows=4
        )
        self.status = widgets.HTML()
        self.table = widgets.HTML()
        self.spectra_pane = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=320)
        self.map_pane = pn.pane.HoloViews(
            _latent_map(self._map, self.class_field, None, None), height=380, width=520
        )
        self.go.on_click(lambda _: self._from_screen(self.target.value))
        self.target.observe(lambda change: self._from_screen(change["new"]), names="value")
        self.anomalies.observe(self._anomaly_picked, names="value")
        for control in (self.k, self.z_range, self.classes):
            control.observe(lambda _: self._requery(), names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.target, self.go, self.anomalies]),
                widgets.HBox([self.k, self.z_range, self.classes]),
                self.status,
                widgets.HBox([pn.ipywidget(self.spectra_pane), pn.ipywidget(self.map_pane)]),
                self.table,
            ]
        )
        self._say(
            f"{len(overview['id'])} spectra in {html.escape(repr(self.index.collection))}; "
            "give a target id or pick an anomaly"
        )

    @classmethod
    def from_namespace(
        cls,
        namespace: dict[str, Any],
        index: str | None = None,
        spectra: str | None = None,
        model: str | None = None,
        *,
        collection: str = "spectra",
        **options: Any,
    ) -> SearchPanel:
        """What ``%labkit search`` shows: names resolved in a notebook's variables.

        ``index`` names a ``SpectrumIndex`` variable or is a URI (default: the newest
        ``SpectrumIndex`` variable). ``spectra`` and ``model`` name variables (default:
        the newest rest-frame ``Spectra`` and ``SpectrumVAE``, if any).
        """
        found = _newest(namespace, lambda v: isinstance(v, SpectrumIndex))
        if index is None:
            if found is None:
                raise ParameterError(
                    "no SpectrumIndex in this notebook: give an index URI (%labkit search "
                    "spectra.db) or build one with labkit.vectors.build_index"
                )
            opened = found
        elif isinstance(namespace.get(index), SpectrumIndex):
            opened = namespace[index]
        else:
            opened = SpectrumIndex(index, collection=collection)
        return cls(
            opened,
            spectra=_variable(namespace, spectra, "spectra", _looks_like_rest_spectra),
            model=_variable(namespace, model, "model", _looks_like_model),
            **options,
        )

    # -- the query ------------------------------------------------------------------------
    def query_filter(self) -> str | None:
        """The Milvus filter the controls describe (None when they restrict nothing)."""
        low, high = self.z_range.value
        z_range = None
        if low > self._z_extent[0] or high < self._z_extent[1]:
            z_range = (low, high)
        chosen = list(self.classes.value)
        classes = None if set(chosen) == set(self.classes.options) else chosen
        return build_filter(z_range, classes, self.class_field)

    def show(self, target_id: int) -> list[Hit]:
        """Search the neighbours of ``target_id`` with the current controls and draw them."""
        if isinstance(target_id, bool) or not isinstance(target_id, int | np.integer):
            raise ParameterError(f"target id must be a whole number, got {target_id!r}")
        target_id = int(target_id)
        hits = self.index.search_ids([target_id], k=self.k.value, filter=self.query_filter())[0]
        stored = self.index.get([target_id, *[h.id for h in hits]])
        vectors = np.stack([row["vector"] for row in stored])
        self.query_id, self.hits = target_id, hits
        self.query_xy = self.projection.transform(vectors[:1])[0]
        self.neighbours = _neighbour_table(stored[0], hits)
        self.table.value = self.neighbours.to_html(
            index=False, float_format="{:.4g}".format, na_rep="—"
        )
        self.spectra_pane.object = self._overlay(stored, vectors)
        self.map_pane.object = _latent_map(
            self._map, self.class_field, self.query_xy, self.projection.transform(vectors[1:])
        )
        where = self.query_filter()
        self._say(
            f"{len(hits)} nearest neighbours of {target_id}"
            + (f" where <code>{html.escape(where)}</code>" if where else "")
        )
        return hits

    def _from_screen(self, text: str) -> None:
        text = str(text).strip()
        if not text:
            return
        try:
            self.show(int(text))
        except ValueError:
            self._say(f"target id must be a whole number, got {html.escape(text)!s}", error=True)
        except LabkitError as exc:
            self._say(html.escape(f"{type(exc).__name__}: {exc}"), error=True)

    def _anomaly_picked(self, change: dict) -> None:
        if change["new"] is not None:
            self.target.value = str(change["new"])  # the target observer runs the search

    def _requery(self) -> None:
        if self.query_id is not None:
            self._from_screen(str(self.query_id))

    def _say(self, message: str, error: bool = False) -> None:
        color = "#b00020" if error else "inherit"
        self.status.value = f"<span style='color:{color}'>{message}</span>"

    # -- drawing --------------------------------------------------------------------------
    def _overlay(self, stored: list[dict], vectors: np.ndarray):
        import holoviews as hv
        import hvplot.pandas  # noqa: F401  (registers .hvplot)
        import pandas as pd

        curves = self._curves(stored, vectors)
        if not curves:
            return None
        (query_name, x, y), rest = curves[0], curves[1:]
        xlabel = self._xlabel()
        plot = None
        if rest:
            frame = pd.concat(
                [pd.DataFrame({"x": cx, "y": cy, "spectrum": name}) for name, cx, cy in rest]
            )
            plot = frame.hvplot.line(
                x="x", y="y", by="spectrum", alpha=0.7, line_width=1, responsive=True, height=320
            )
        query = pd.DataFrame({"x": x, "y": y}).hvplot.line(
            x="x",
            y="y",
            color="black",
            line_width=2.5,
            label=query_name,
            responsive=True,
            height=320,
        )
        overlay = query if plot is None else plot * query
        return overlay.opts(
            hv.opts.Overlay(
                xlabel=xlabel,
                ylabel=self._ylabel(),
                responsive=True,
                height=320,
                legend_position="right",
                title=f"neighbours of {self.query_id}",
            )
        )

    def _curves(self, stored: list[dict], vectors: np.ndarray) -> list[tuple[str, Any, Any]]:
        names = [f"query {stored[0]['id']}"] + [
            f"{row['id']} (d={hit.distance:.3g})"
            for row, hit in zip(stored[1:], self.hits, strict=True)
        ]
        if self._rows:
            wave = np.asarray(self.spectra.wave)
            out = []
            for name, row in zip(names, stored, strict=True):
                i = self._rows.get(int(row["id"]))
                if i is None:
                    continue
                one = self.spectra[i]  # a Spectra or a store: either reads just this row
                flux = np.asarray(one.flux[0], dtype=float)
                flux = np.where(np.asarray(one.mask[0], bool), np.nan, flux)
                out.append((name, wave, flux))
            if out and out[0][0] == names[0]:
                return out
        if self.model is not None and callable(getattr(self.model, "decode", None)):
            decoded = np.asarray(self.model.decode(vectors))
            wave = np.asarray(getattr(self.model, "wave", np.arange(decoded.shape[1])))
            wave = wave.detach().cpu().numpy() if hasattr(wave, "detach") else wave
            return [(n, wave, f) for n, f in zip(names, decoded, strict=True)]
        dims = np.arange(vectors.shape[1])
        return [(n, dims, v) for n, v in zip(names, vectors, strict=True)]

    def _xlabel(self) -> str:
        if self._rows or (self.model is not None and hasattr(self.model, "decode")):
            return "rest wavelength (Å)"
        return "latent dimension"

    def _ylabel(self) -> str:
        if self._rows:
            return "flux"
        return "model flux" if self.model is not None else "latent value"

    # -- display ----------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _newest(namespace: dict[str, Any], test) -> Any:
    picked = None
    for name, value in namespace.items():
        if not name.startswith("_") and not isinstance(value, type) and test(value):
            picked = value
    return picked


def _variable(namespace: dict[str, Any], name: str | None, what: str, test) -> Any:
    if name is None:
        return _newest(namespace, test)
    if name not in namespace:
        raise ParameterError(f"no variable {name!r} in this notebook for --{what}")
    return namespace[name]


def _looks_like_rest_spectra(value: Any) -> bool:
    has = all(hasattr(value, a) for a in ("wave", "flux", "mask", "meta"))
    return has and getattr(value, "frame", "rest") == "rest"


def _looks_like_model(value: Any) -> bool:
    return all(callable(getattr(value, a, None)) for a in ("encode", "decode", "anomaly_score"))


def _rows_by_id(spectra: Any) -> dict[int, int]:
    if spectra is None:
        return {}
    meta = getattr(spectra, "meta", None)
    if meta is None or "targetid" not in getattr(meta, "colnames", meta):
        raise ParameterError("spectra.meta needs a 'targetid' column to match the index ids")
    return {int(t): i for i, t in enumerate(np.asarray(meta["targetid"]).tolist())}


def _class_field(overview: dict[str, np.ndarray]) -> str:
    """``label`` when the index holds labels (mock surveys), else ``spectype``."""
    return "label" if any(str(v) for v in overview["label"]) else "spectype"


def _anomaly_options(index: SpectrumIndex) -> list[tuple[str, int]]:
    options = []
    for row in index.top_anomalies(ANOMALY_CHOICES):
        tag = row.get("label") or row.get("spectype") or ""
        options.append((f"{row['id']} · {row['anomaly_score']:.3g} · {tag}", int(row["id"])))
    return options


def _map_points(
    overview, projection: LatentProjection, class_field: str, max_points: int, seed: int
):
    import pandas as pd

    n = len(overview["id"])
    pick = np.arange(n)
    if n > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    xy = projection.transform(overview["vector"][pick])
    return pd.DataFrame(
        {
            "pc1": xy[:, 0],
            "pc2": xy[:, 1],
            # text, because the browser's numbers cannot hold 64-bit target ids exactly
            "id": overview["id"][pick].astype(str),
            class_field: [str(c) or "—" for c in overview[class_field][pick]],
        }
    )


def _latent_map(points, class_field: str, query_xy, neighbour_xy):
    import hvplot.pandas  # noqa: F401
    import pandas as pd

    plot = points.hvplot.scatter(
        x="pc1",
        y="pc2",
        by=class_field,
        size=6,
        alpha=0.5,
        hover_cols=["id"],
        xlabel="latent PC1",
        ylabel="latent PC2",
        title="latent space",
    )
    if neighbour_xy is not None and len(neighbour_xy):
        near = pd.DataFrame({"pc1": neighbour_xy[:, 0], "pc2": neighbour_xy[:, 1]})
        plot = plot * near.hvplot.scatter(
            x="pc1",
            y="pc2",
            marker="circle",
            size=80,
            color="none",
            line_color="black",
            label="neighbours",
        )
    if query_xy is not None:
        query = pd.DataFrame({"pc1": [query_xy[0]], "pc2": [query_xy[1]]})
        plot = plot * query.hvplot.scatter(
            x="pc1", y="pc2", marker="star", size=300, color="black", label="query"
        )
    return plot


def _neighbour_table(query: dict, hits: list[Hit]):
    import pandas as pd

    rows = [{"rank": 0, "id": query["id"], "distance": 0.0, **{f: query[f] for f in FIELD_NAMES}}]
    rows += [
        {"rank": rank, "id": hit.id, "distance": hit.distance, **hit.meta}
        for rank, hit in enumerate(hits, start=1)
    ]
    return pd.DataFrame(rows, columns=["rank", "id", "distance", *FIELD_NAMES])
