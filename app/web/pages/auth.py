"""Sign-in and sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from app.api.deps import check_csrf, client_ip, runtime, session_user
from app.api.problems import Problem
from app.audit import Actor, record
from app.security import sessions
from app.security.signin import SignInRefused, sign_in
from app.web.context import Form, presented_csrf, safe_next
from app.web.errors import WebRoute
from app.web.forms import text
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)

MAX_USERNAME = 64
MAX_PASSWORD = 1024


def _login_page(
    request: Request,
    *,
    next_url: str,
    username: str = "",
    error: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "auth/login.html",
        {"next": next_url, "username": username, "error": error},
        status_code=status_code,
        headers=headers,
    )


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    target = safe_next(next)
    with runtime(request).db.session() as session:
        if session_user(request, session) is not None:
            return RedirectResponse(target, status_code=303)
    return _login_page(request, next_url=target)


@router.post("/login")
def login_submit(request: Request, form: Form) -> Response:
    username = text(form, "username")[:MAX_USERNAME]
    raw_password = form.get("password")
    password = raw_password if isinstance(raw_password, str) else ""
    target = safe_next(text(form, "next"))
    try:
        check_csrf(request, presented_csrf(request, form))
    except Problem:
        # The sign-in form had no session yet (expired cookie, or posted from elsewhere).
        return _login_page(
            request,
            next_url=target,
            username=username,
            error="The sign-in form expired. Please enter your password again.",
            status_code=403,
        )
    if not username or not password:
        return _login_page(
            request,
            next_url=target,
            username=username,
            error="Enter your user name and password.",
            status_code=422,
        )
    if len(password) > MAX_PASSWORD:
        # No password is this long; hashing one would only cost time.
        return _login_page(
            request,
            next_url=target,
            username=username,
            error="Wrong user name or password.",
            status_code=401,
        )
    rt = runtime(request)
    with rt.db.session() as session:
        try:
            user = sign_in(session, rt.throttle, username, password, client_ip(request))
        except SignInRefused as exc:
            message = str(exc)
            if exc.retry_after > 0:
                return _login_page(
                    request,
                    next_url=target,
                    username=username,
                    error=message[:1].upper() + message[1:] + ".",
                    status_code=429,
                    headers={"Retry-After": str(exc.retry_after)},
                )
            return _login_page(
                request,
                next_url=target,
                username=username,
                error=message[:1].upper() + message[1:] + ".",
                status_code=401,
            )
        sessions.start(request.session, user)
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(request: Request, form: Form) -> Response:
    check_csrf(request, presented_csrf(request, form))
    with runtime(request).db.session() as session:
        user = session_user(request, session)
        if user is not None:
            record(
                session,
                Actor(user.username, "user", client_ip(request)),
                "auth.sign_out",
                "user",
                user.id,
            )
            # A copy of this cookie (or any other session of the user) ends here too.
            sessions.end_all(user)
    request.session.clear()
    flash(request, "You are signed out.", "info")
    return RedirectResponse("/login", status_code=303)
