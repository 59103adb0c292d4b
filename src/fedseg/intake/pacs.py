"""``fedseg intake pacs``: C-ECHO, C-FIND, C-GET/C-MOVE and C-STORE against a PACS (pynetdicom).

Queries use the Study Root information model. Retrieved instances are written as
``DEST/<n>/<SOPInstanceUID>.dcm`` (one numbered folder per study), ready for
``fedseg intake dicom``. The raw DICOM folder holds patient data: keep it at the site.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    BasicTextSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    EnhancedSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
    MRSpectroscopyStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    RawDataStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from fedseg.errors import FedsegError
from fedseg.intake.config import PacsConfig, TlsConfig

#: Transfer syntaxes we accept for images: uncompressed and the common compressed ones,
#: which GDCM (inside SimpleITK) decodes.
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
    JPEG2000,
    JPEGBaseline8Bit,
]
#: Storage classes offered for C-GET (one association holds at most 128 contexts, so not all).
GET_STORAGE_CLASSES = [
    MRImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRSpectroscopyStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    SecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    BasicTextSRStorage,
    EnhancedSRStorage,
    RawDataStorage,
    SegmentationStorage,
]
_DATE_RANGE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")


class StudyQuery(BaseModel):
    """What to look for. Empty fields match anything; text fields take DICOM wildcards (*, ?).

    ``study_date`` is a DICOM date or range: ``20240101``, ``20240101-20241231``,
    ``20240101-`` (from), ``-20241231`` (until).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    patient_id: str = ""
    study_date: str = ""
    modality: str = ""
    series_description: str = ""
    study_uid: str = ""

    @field_validator("study_date")
    @classmethod
    def _date(cls, value: str) -> str:
        if value and (not _DATE_RANGE.match(value) or value == "-"):
            raise ValueError(f"study date {value!r}: use YYYYMMDD or YYYYMMDD-YYYYMMDD")
        return value

    @property
    def series_level(self) -> bool:
        """True when the query needs a series-level look (a series description filter)."""
        return bool(self.series_description)


@dataclass
class SeriesMatch:
    series_uid: str
    number: str
    modality: str
    description: str
    instances: str


@dataclass
class StudyMatch:
    """One study found by C-FIND (with its matching series for series-level queries)."""

    study_uid: str
    patient_id: str
    study_date: str
    description: str
    modalities: str
    series: list[SeriesMatch] = field(default_factory=list)


@dataclass
class RetrieveResult:
    """Instances received per study folder, and sub-operations the PACS reported failed."""

    received: int
    failed: int
    folders: list[Path]


def ssl_client_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS context that verifies the PACS with ``tls.ca`` and presents our cert if given."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
        ctx.check_hostname = tls.check_hostname
        if tls.cert:
            ctx.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
    except (OSError, ssl.SSLError) as exc:
        raise FedsegError(f"TLS files in the PACS config cannot be used: {exc}") from None
    return ctx


def ssl_server_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS context for our C-MOVE storage listener (needs ``cert`` and ``key``)."""
    if not (tls.cert and tls.key):
        raise FedsegError("C-MOVE over TLS needs tls.cert and tls.key in the PACS config")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise FedsegError(f"TLS files in the PACS config cannot be used: {exc}") from None
    return ctx


def _ae(cfg: PacsConfig) -> AE:
    ae = AE(ae_title=cfg.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout_s
    ae.connection_timeout = cfg.timeout_s
    return ae


def _where(cfg: PacsConfig) -> str:
    p = cfg.peer
    return f"PACS {p.ae_title}@{p.host}:{p.port}"


def _tcp_problem(cfg: PacsConfig) -> str | None:
    """Why a plain TCP connection to the peer fails (None if it opens)."""
    try:
        with socket.create_connection((cfg.peer.host, cfg.peer.port), timeout=cfg.timeout_s):
            return None
    except TimeoutError:
        return f"no answer within {cfg.timeout_s:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


@contextmanager
def _association(
    cfg: PacsConfig, ae: AE, ext_neg: list | None = None, handlers: list | None = None
) -> Iterator[Association]:
    """An established association, released after use; a one-line FedsegError if none."""
    tls_args = None
    if cfg.tls is not None:
        ctx = ssl_client_context(cfg.tls)
        tls_args = (ctx, cfg.peer.host)  # the name is checked only if tls.check_hostname
    assoc = ae.associate(
        cfg.peer.host,
        cfg.peer.port,
        ae_title=cfg.peer.ae_title,
        ext_neg=ext_neg,
        evt_handlers=handlers,
        tls_args=tls_args,
    )
    if not assoc.is_established:
        if assoc.is_rejected:
            raise FedsegError(
                f"{_where(cfg)} refused the association from calling AE {cfg.calling_ae!r}: "
                "check that the PACS knows this AE title and that peer.ae_title is right"
            )
        reason = _tcp_problem(cfg)
        if reason:
            raise FedsegError(
                f"cannot reach {_where(cfg)}: {reason}; check peer.host, peer.port and the firewall"
            )
        if assoc.is_aborted:
            raise FedsegError(
                f"{_where(cfg)} aborted the association: check the TLS settings, the AE titles "
                "(peer.ae_title, calling_ae) and that the port speaks DICOM"
            )
        raise FedsegError(
            f"cannot reach {_where(cfg)}: no DICOM connection within {cfg.timeout_s:g} s; "
            "check peer.host, peer.port, the firewall and whether the PACS expects TLS"
        )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _status(ds: Dataset | None) -> int | None:
    return int(ds.Status) if ds is not None and "Status" in ds else None


def echo(cfg: PacsConfig) -> float:
    """C-ECHO; returns the round trip in ms. A FedsegError if it fails."""
    ae = _ae(cfg)
    ae.add_requested_context(Verification)
    with _association(cfg, ae) as assoc:
        start = time.perf_counter()
        status = _status(assoc.send_c_echo())
        ms = (time.perf_counter() - start) * 1000
    if status != 0x0000:
        raise FedsegError(f"{_where(cfg)} answered C-ECHO with status {status!r}")
    return ms


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value or "")


def _find(assoc: Association, identifier: Dataset, cfg: PacsConfig) -> list[Dataset]:
    found = []
    for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
        code = _status(status)
        if code is None:
            raise FedsegError(f"{_where(cfg)} stopped answering the C-FIND (timeout or abort)")
        if code in (0xFF00, 0xFF01) and ds is not None:
            found.append(ds)
        elif code != 0x0000:
            raise FedsegError(f"{_where(cfg)} failed the C-FIND with status 0x{code:04X}")
    return found


def find(cfg: PacsConfig, query: StudyQuery) -> list[StudyMatch]:
    """Studies matching ``query`` (series listed when the query filters on series)."""
    ae = _ae(cfg)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    studies: list[StudyMatch] = []
    with _association(cfg, ae) as assoc:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.PatientID = query.patient_id
        q.StudyDate = query.study_date
        q.StudyInstanceUID = query.study_uid
        q.StudyDescription = ""
        q.ModalitiesInStudy = query.modality
        for ds in _find(assoc, q, cfg):
            studies.append(
                StudyMatch(
                    _text(ds, "StudyInstanceUID"),
                    _text(ds, "PatientID"),
                    _text(ds, "StudyDate"),
                    _text(ds, "StudyDescription"),
                    _text(ds, "ModalitiesInStudy"),
                )
            )
        if not query.series_level:
            return sorted(studies, key=lambda s: (s.study_date, s.study_uid))
        kept = []
        for study in studies:
            q = Dataset()
            q.QueryRetrieveLevel = "SERIES"
            q.StudyInstanceUID = study.study_uid
            q.SeriesInstanceUID = ""
            q.SeriesNumber = ""
            q.Modality = query.modality
            q.SeriesDescription = query.series_description
            q.NumberOfSeriesRelatedInstances = ""
            study.series = [
                SeriesMatch(
                    _text(ds, "SeriesInstanceUID"),
                    _text(ds, "SeriesNumber"),
                    _text(ds, "Modality"),
                    _text(ds, "SeriesDescription"),
                    _text(ds, "NumberOfSeriesRelatedInstances"),
                )
                for ds in _find(assoc, q, cfg)
            ]
            if study.series:
                kept.append(study)
    return sorted(kept, key=lambda s: (s.study_date, s.study_uid))


class _Store:
    """C-STORE handler: writes each received instance into its study's folder."""

    def __init__(self, dest: Path, folder_of: dict[str, Path]) -> None:
        self.dest = dest
        self.folder_of = folder_of
        self.received = 0
        self.lock = threading.Lock()

    def __call__(self, event: evt.Event) -> int:
        ds = event.dataset
        study = str(ds.get("StudyInstanceUID", ""))
        sop = str(event.request.AffectedSOPInstanceUID)
        if not re.fullmatch(r"[0-9.]+", sop):
            return 0xC211  # refuse a malformed UID rather than write an odd file name
        with self.lock:
            folder = self.folder_of.get(study)
            if folder is None:
                folder = self.dest / f"unrequested-{len(self.folder_of) + 1:03d}"
                self.folder_of[study] = folder
            folder.mkdir(parents=True, exist_ok=True)
            self.received += 1
        (folder / f"{sop}.dcm").write_bytes(event.encoded_dataset(include_meta=True))
        return 0x0000


def _retrieve_identifier(study: StudyMatch) -> list[Dataset]:
    if study.series:
        out = []
        for s in study.series:
            ds = Dataset()
            ds.QueryRetrieveLevel = "SERIES"
            ds.StudyInstanceUID = study.study_uid
            ds.SeriesInstanceUID = s.series_uid
            out.append(ds)
        return out
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study.study_uid
    return [ds]


def _count_failures(responses: Iterator, cfg: PacsConfig, verb: str) -> int:
    failed = 0
    for status, _ in responses:
        code = _status(status)
        if code is None:
            raise FedsegError(f"{_where(cfg)} stopped answering the {verb} (timeout or abort)")
        if code in (0xFF00, 0xFF01):
            continue
        failed += int(status.get("NumberOfFailedSuboperations", 0) or 0)
        if code == 0xA801:
            raise FedsegError(
                f"{_where(cfg)} does not know the move destination {cfg.calling_ae!r}: register "
                f"it in the PACS with this host and port {cfg.move_port}, or use retrieve: get"
            )
        if code not in (0x0000, 0xB000):
            raise FedsegError(f"{_where(cfg)} failed the {verb} with status 0x{code:04X}")
    return failed


def retrieve(cfg: PacsConfig, studies: list[StudyMatch], dest: Path) -> RetrieveResult:
    """Fetch the given studies (only their listed series, if any) into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    start = len([p for p in dest.iterdir() if p.is_dir()])
    folder_of = {s.study_uid: dest / f"study-{start + i + 1:03d}" for i, s in enumerate(studies)}
    store = _Store(dest, folder_of)
    ae = _ae(cfg)
    failed = 0
    if cfg.retrieve == "get":
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        roles = []
        for uid in GET_STORAGE_CLASSES:
            ae.add_requested_context(uid, TRANSFER_SYNTAXES)
            roles.append(build_role(uid, scp_role=True))
        with _association(cfg, ae, roles, [(evt.EVT_C_STORE, store)]) as assoc:
            for study in studies:
                for ident in _retrieve_identifier(study):
                    responses = assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet)
                    failed += _count_failures(responses, cfg, "C-GET")
    else:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
        ssl_ctx = ssl_server_context(cfg.tls) if cfg.tls else None
        try:
            server = ae.start_server(
                (cfg.move_bind, cfg.move_port),
                block=False,
                ssl_context=ssl_ctx,
                evt_handlers=[(evt.EVT_C_STORE, store)],
            )
        except OSError as exc:
            raise FedsegError(
                f"cannot listen on {cfg.move_bind}:{cfg.move_port} for C-MOVE ({exc.strerror}); "
                "free the port or set move_port in the PACS config"
            ) from None
        try:
            with _association(cfg, ae) as assoc:
                for study in studies:
                    for ident in _retrieve_identifier(study):
                        responses = assoc.send_c_move(
                            ident, cfg.calling_ae, StudyRootQueryRetrieveInformationModelMove
                        )
                        failed += _count_failures(responses, cfg, "C-MOVE")
        finally:
            if server is not None:
                server.shutdown()
    folders = sorted({f for f in folder_of.values() if f.exists()})
    return RetrieveResult(store.received, failed, folders)


@dataclass
class StoreResult:
    """Instances the PACS accepted (warnings included) out of those sent."""

    stored: int
    sent: int


def store(cfg: PacsConfig, files: list[Path]) -> StoreResult:
    """C-STORE DICOM files (e.g. a DICOM SEG from ``fedseg intake seg``) to the PACS, over
    the same association settings (AE titles, TLS) as retrieve; a FedsegError names the
    first file the PACS refused."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    datasets = []
    for f in files:
        try:
            datasets.append((Path(f), dcmread(f)))
        except (InvalidDicomError, OSError) as exc:
            raise FedsegError(f"{f}: not a DICOM file that can be sent ({exc})") from None
    contexts = sorted(
        {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in datasets}
    )
    if len(contexts) > 128:
        raise FedsegError(f"{len(contexts)} kinds of instance in one call; send at most 128")
    ae = _ae(cfg)
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    stored = 0
    with _association(cfg, ae) as assoc:
        for path, ds in datasets:
            try:
                status = _status(assoc.send_c_store(ds))
            except ValueError:  # no accepted presentation context for its SOP class
                raise FedsegError(
                    f"{_where(cfg)} does not accept {path.name}'s kind of instance "
                    f"(SOP class {ds.SOPClassUID.name}) in its transfer syntax"
                ) from None
            if status is None:
                raise FedsegError(f"{_where(cfg)} stopped answering the C-STORE of {path.name}")
            if status != 0x0000 and not 0xB000 <= status <= 0xBFFF:  # B...: stored, warning
                raise FedsegError(
                    f"{_where(cfg)} refused {path.name} (C-STORE status 0x{status:04X}); "
                    f"{stored} file(s) stored before it"
                )
            stored += 1
    return StoreResult(stored, len(datasets))
