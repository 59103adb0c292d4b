"""`fedseg pki ...`: the consortium CA, the aggregator's TLS certificate, site enrollment."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from fedseg.federation.security import pki

app = typer.Typer(no_args_is_help=True)
console = Console(highlight=False)

CredsOption = typer.Option(
    Path("."),
    "--creds",
    envvar="FEDSEG_CREDS",
    help="Coordinator credentials folder (made by `fedseg pki init`).",
)


@app.command("init")
def init(
    folder: Path = typer.Argument(..., help="Folder for the CA (created; must hold no CA)."),
    name: str = typer.Option("fedseg consortium CA", help="The CA's common name."),
    days: int = typer.Option(pki.CA_DAYS, min=1, help="Validity in days."),
) -> None:
    """Create the consortium's CA (EC P-384): ca.crt to share, ca.key (0600) to guard."""
    paths = pki.init_ca(folder, name=name, days=days)
    console.print(f"CA created: {paths.cert} (share) and {paths.key} (keep private, mode 600)")
    console.print(f"next: fedseg pki issue-server HOST --creds {folder}")


@app.command("issue-server")
def issue_server(
    host: str = typer.Argument(..., help="DNS name (or IP) sites use to reach the aggregator."),
    ip: list[str] = typer.Option([], "--ip", help="Extra IP address for the certificate."),
    creds: Path = CredsOption,
    days: int = typer.Option(pki.SERVER_DAYS, min=1, help="Validity in days."),
) -> None:
    """Issue the SuperLink's TLS certificate (SANs: HOST, --ip, localhost, 127.0.0.1, ::1)."""
    cert, key = pki.issue_server(creds, host, ips=ip, days=days)
    console.print(f"server certificate {cert}, key {key} (mode 600)")


@app.command("issue-site")
def issue_site(
    name: str = typer.Argument(..., help="Site name, as in the plan (letters, digits, _ - .)."),
    creds: Path = CredsOption,
    days: int = typer.Option(pki.SITE_DAYS, min=1, help="Validity in days."),
) -> None:
    """Make a site's SuperNode key pair here and enroll it (prefer `pki request` + `pki sign`)."""
    bundle = pki.issue_site(creds, name, days=days)
    console.print(f"site {name!r} enrolled; hand the folder {bundle} to the site over a secure")
    console.print("channel, then delete its site.key here (the site starts with --creds FOLDER)")


@app.command("request")
def request(
    name: str = typer.Argument(..., help="This site's name, as agreed with the coordinator."),
    out: Path = typer.Option(..., "--out", help="This site's credentials folder."),
) -> None:
    """At a site: make the SuperNode key (stays here) and a request to send to the coordinator."""
    csr = pki.make_request(name, out)
    console.print(f"key {out / pki.SITE_KEY_FILE} (mode 600, never send it)")
    console.print(f"send {csr} to the coordinator; copy back ca.crt and site.crt into {out}")


@app.command("sign")
def sign(
    request_file: Path = typer.Argument(..., help="A site's .csr file (from `pki request`)."),
    creds: Path = CredsOption,
    days: int = typer.Option(pki.SITE_DAYS, min=1, help="Validity in days."),
) -> None:
    """At the coordinator: check a site's request and enroll its key (no private key involved)."""
    bundle = pki.sign_request(creds, request_file, days=days)
    console.print(f"enrolled; send {bundle / pki.CA_CERT} and {bundle / pki.SITE_CERT} back")


app.command("enroll", help="Same as `sign`.")(sign)


@app.command("list")
def list_sites(creds: Path = CredsOption) -> None:
    """List the enrolled sites (each certificate checked against the CA)."""
    for site in pki.enrolled_sites(creds):
        console.print(f"{site.name}\tvalid until {site.not_after:%Y-%m-%d}")
