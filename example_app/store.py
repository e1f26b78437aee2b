"""Maple & Moss: a small store behind `TrackLayerMiddleware`, the way a real one would use it.

One Starlette app serves every host of the store (routing on the Host header), so one uvicorn
server is enough:

==========================  =====================================================  ==================
host                        pages                                                  browser events
==========================  =====================================================  ==================
``www.shop.localhost``      ``/`` home, ``/c/<slug>`` category, ``/search?q=``,    PageVisit on every
                            ``/p/<sku>`` product (add to cart), ``/cart``,         page; ViewCategory,
                            ``/signup``                                            Search, AddToCart,
                                                                                   Signup
``checkout.shop.localhost`` ``/checkout`` (details), ``/confirmation?order=``      Checkout, Purchase
                                                                                   (+ server Purchase)
``pay.localhost``           ``/pay?order=`` (the payment partner, another site),   AddPaymentInfo
                            ``/gift-cards``
==========================  =====================================================  ==================

``shop.localhost`` hosts share cookies through ``cookie_domain=.shop.localhost``; ``pay.localhost``
is a different site, reached through the linker (``linked_domains=pay.localhost``): the checkout's
redirect there gets a ``_tlx`` token from the middleware, and so do links to it (the snippet
routes them through ``/_tl/go``).

Consent: the store runs with ``consent="tl_consent=granted"``. The cookie banner calls
``tracklayer.consent(true|false)``; until then the snippet holds every event and the server sets
no tracking cookie. The linker token that takes the visitor to the payment partner carries the
consent along (tokens are minted only with consent), and the middleware there remembers it in the
partner's own consent cookie.

The confirmation page is the one template that places the tag itself
(``{{ tracklayer_tag(request) }}``, registered with :func:`tracklayer_mw.snippet.install_jinja`);
the middleware injects it into every other page.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import jinja2
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Host, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from example_app import catalog
from example_app.catalog import CURRENCY, Product, money
from tracklayer_mw import Engine, Settings, TrackLayerMiddleware, track
from tracklayer_mw.snippet import install_jinja

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CART_COOKIE = "mm_cart"
BANNER_COOKIE = "tl_banner"  # the visitor answered the banner (either way): do not ask again
YEAR = 31_536_000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# --- hosts ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hosts:
    """The store's host names; every one resolves to loopback in browsers with no setup."""

    shop_domain: str = "shop.localhost"
    pay: str = "pay.localhost"
    sandbox: str = "sandbox.localhost"

    @property
    def www(self) -> str:
        return f"www.{self.shop_domain}"

    @property
    def checkout(self) -> str:
        return f"checkout.{self.shop_domain}"

    @property
    def lead(self) -> str:
        return f"lead.{self.shop_domain}"

    def urls(self, scheme: str, port: int | None) -> dict[str, str]:
        """Absolute origins of every host, on the scheme and port the visitor came in on."""
        suffix = f":{port}" if port and port not in (80, 443) else ""
        names = {
            "www": self.www,
            "checkout": self.checkout,
            "lead": self.lead,
            "pay": self.pay,
            "sandbox": self.sandbox,
        }
        return {key: f"{scheme}://{host}{suffix}" for key, host in names.items()}


# --- orders and carts ----------------------------------------------------------------------------


@dataclass(slots=True)
class Line:
    product: Product
    quantity: int

    @property
    def total_cents(self) -> int:
        return self.product.price_cents * self.quantity


@dataclass(slots=True)
class Order:
    order_id: str
    email: str
    first_name: str
    last_name: str
    city: str
    zip: str
    lines: list[Line]
    paid: bool = False
    server_purchase_id: str | None = None  # set once the server has tracked the Purchase

    @property
    def total_cents(self) -> int:
        return sum(line.total_cents for line in self.lines)


class Orders:
    """Orders in memory, shared by the checkout host and the payment partner (one process)."""

    def __init__(self) -> None:
        self._orders: dict[str, Order] = {}
        self._lock = threading.Lock()

    def create(self, **fields: Any) -> Order:
        with self._lock:
            while True:
                order_id = f"MM-{secrets.randbelow(900_000) + 100_000}"
                if order_id not in self._orders:
                    break
            order = self._orders[order_id] = Order(order_id=order_id, **fields)
            return order

    def get(self, order_id: str | None) -> Order | None:
        with self._lock:
            return self._orders.get(order_id or "")

    def claim_server_purchase(self, order: Order) -> bool:
        """True exactly once per order: the server tracks a Purchase once, however often the page loads."""
        with self._lock:
            if order.server_purchase_id is not None:
                return False
            order.server_purchase_id = "pending"
            return True


class Carts:
    """The cart lives in a signed cookie shared by every host of the cookie domain."""

    def __init__(self, secret: str, cookie_domain: str | None) -> None:
        self._serializer = URLSafeSerializer(secret, salt="maple-moss-cart")
        self._domain = cookie_domain

    def load(self, cookies: Mapping[str, str]) -> dict[str, int]:
        raw = cookies.get(CART_COOKIE)
        if not raw:
            return {}
        try:
            data = self._serializer.loads(raw)
        except BadSignature:
            return {}
        if not isinstance(data, dict):
            return {}
        cart: dict[str, int] = {}
        for sku, quantity in data.items():
            if catalog.product(str(sku)) and isinstance(quantity, int) and 0 < quantity <= 99:
                cart[str(sku)] = quantity
        return cart

    def lines(self, request: Request) -> list[Line]:
        lines = []
        for sku, quantity in self.load(request.cookies).items():
            item = catalog.product(sku)
            if item is not None:
                lines.append(Line(item, quantity))
        return lines

    def save(self, response: Response, request: Request, cart: Mapping[str, int]) -> None:
        domain = self._domain_for(request)
        if not cart:
            response.delete_cookie(CART_COOKIE, path="/", domain=domain)
            return
        response.set_cookie(
            CART_COOKIE,
            self._serializer.dumps(dict(cart)),
            max_age=14 * 86400,
            path="/",
            domain=domain,
            httponly=True,
            samesite="lax",
        )

    def _domain_for(self, request: Request) -> str | None:
        host = request.url.hostname or ""
        if self._domain and (host == self._domain.lstrip(".") or host.endswith(self._domain)):
            return self._domain
        return None


# --- the app -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Visit:
    """What a page needs to know about the request, whatever the framework."""

    hostname: str
    cookies: Mapping[str, str]
    site: dict[str, str]

    @classmethod
    def of(
        cls, scheme: str, hostname: str | None, port: int | None, cookies: Mapping[str, str], hosts: Hosts
    ) -> Visit:
        return cls((hostname or "").lower(), cookies, hosts.urls(scheme, port))


@dataclass
class Store:
    """Everything the handlers share; one per app."""

    settings: Settings
    engine: Engine
    hosts: Hosts
    orders: Orders
    carts: Carts
    templates: jinja2.Environment
    currency: str = CURRENCY

    # -- request helpers (a `Visit`, so the Flask page shares them) -------------------------------

    def has_consent(self, visit: Visit) -> bool:
        cookie = self.settings.consent_cookie
        if cookie is None:
            return self.settings.consent is None
        return visit.cookies.get(cookie[0]) == cookie[1]

    def partner_url(self, visit: Visit, path: str, **params: str) -> str:
        """A URL at the payment partner; the middleware adds the linker token to redirects there."""
        url = f"{visit.site['pay']}{path}"
        return f"{url}?{urlencode(params)}" if params else url

    def banner_domain(self, visit: Visit) -> str:
        """The Domain for the banner's cookies: the shared cookie domain where it applies."""
        domain = self.settings.cookie_domain
        if domain and (visit.hostname == domain.lstrip(".") or visit.hostname.endswith(domain)):
            return domain
        return ""

    def layout(self, visit: Visit) -> dict[str, Any]:
        """What base.html needs on every page."""
        show_banner = (
            self.settings.consent_cookie is not None
            and not self.has_consent(visit)
            and BANNER_COOKIE not in visit.cookies
        )
        return {
            "site": visit.site,
            "cart_count": sum(self.carts.load(visit.cookies).values()),
            "categories": catalog.CATEGORIES,
            "show_banner": show_banner,
            "banner_domain": self.banner_domain(visit),
            "currency": self.currency,
            "gift_cards_url": self.partner_url(visit, "/gift-cards"),
        }

    def visit(self, request: Request) -> Visit:
        return Visit.of(
            request.url.scheme, request.url.hostname, request.url.port, request.cookies, self.hosts
        )

    def site(self, request: Request) -> dict[str, str]:
        return self.hosts.urls(request.url.scheme, request.url.port)

    def render(
        self,
        request: Request,
        template: str,
        *,
        title: str,
        events: list[dict[str, Any]] | None = None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            request=request,
            title=title,
            page_events=events or [],
            **self.layout(self.visit(request)),
            **context,
        )
        return HTMLResponse(html, status_code=status_code, headers={"cache-control": "no-store"})


def _product_custom(item: Product, quantity: int = 1) -> dict[str, Any]:
    return {
        "value": round(item.price * quantity, 2),
        "currency": CURRENCY,
        "content_ids": [item.sku],
        "content_name": item.name,
        "content_category": item.category,
        "num_items": quantity,
        "contents": [{"id": item.sku, "quantity": quantity, "item_price": item.price}],
    }


def _lines_custom(lines: list[Line]) -> dict[str, Any]:
    return {
        "value": round(sum(line.total_cents for line in lines) / 100, 2),
        "currency": CURRENCY,
        "num_items": sum(line.quantity for line in lines),
        "content_ids": [line.product.sku for line in lines],
        "contents": [
            {"id": line.product.sku, "quantity": line.quantity, "item_price": line.product.price}
            for line in lines
        ],
    }


def order_custom(order: Order) -> dict[str, Any]:
    """What both the browser's and the server's Purchase say about an order (same order id: one event)."""
    return {**_lines_custom(order.lines), "order_id": order.order_id}


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (python-multipart is not needed for that)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {key: values[-1].strip() for key, values in parse_qs(body, keep_blank_values=True).items()}


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    install_jinja(env)  # {{ tracklayer_tag(request) }}, marked so the middleware adds no second tag
    return env


def create_app(
    settings: Settings,
    *,
    transport: httpx.BaseTransport | None = None,
    engine: Engine | None = None,
    hosts: Hosts | None = None,
    orders: Orders | None = None,
) -> Starlette:
    """The store, behind `TrackLayerMiddleware`.

    ``transport`` goes to the delivery worker (``PinterestSandbox().transport()`` in the demo and the
    tests); pass an ``engine`` instead to share one with another app (the Flask page). The engine is
    at ``app.state.engine``; ``app.state.store`` holds the rest.
    """
    hosts = hosts or Hosts()
    engine = engine or Engine(settings, transport=transport)
    settings = engine.settings
    secret = settings.secret_keys[-1]
    store = Store(
        settings=settings,
        engine=engine,
        hosts=hosts,
        orders=orders or Orders(),
        carts=Carts(secret, settings.cookie_domain),
        templates=make_templates(),
    )

    shared: list[BaseRoute] = [
        Route("/img/{sku}.svg", _picture, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    www = Router(
        routes=[
            Route("/", _home, methods=["GET"]),
            Route("/c/{slug}", _category, methods=["GET"]),
            Route("/search", _search, methods=["GET"]),
            Route("/p/{sku}", _product, methods=["GET"]),
            Route("/cart", _cart, methods=["GET"]),
            Route("/cart/add", _cart_add, methods=["POST"]),
            Route("/cart/update", _cart_update, methods=["POST"]),
            Route("/signup", _signup, methods=["GET", "POST"]),
            *shared,
        ]
    )
    checkout = Router(
        routes=[
            Route("/", _to_www, methods=["GET"]),
            Route("/checkout", _checkout, methods=["GET", "POST"]),
            Route("/confirmation", _confirmation, methods=["GET"]),
            *shared,
        ]
    )
    pay = Router(
        routes=[
            Route("/", _to_gift_cards, methods=["GET"]),
            Route("/pay", _pay, methods=["GET", "POST"]),
            Route("/gift-cards", _gift_cards, methods=["GET"]),
            *shared,
        ]
    )
    middleware = [Middleware(TrackLayerMiddleware, engine=engine)]
    app = Starlette(
        routes=[
            Host(hosts.www, app=www),
            Host(hosts.checkout, app=checkout),
            Host(hosts.pay, app=pay),
            Route("/{path:path}", _to_www),
        ],
        middleware=middleware,
        exception_handlers={404: _not_found, 400: _not_found},
    )
    app.state.store = store
    app.state.engine = engine
    return app


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


# --- www.shop.localhost --------------------------------------------------------------------------


async def _home(request: Request) -> Response:
    store = _store(request)
    return store.render(
        request, "home.html", title="Maple & Moss — slow-made things for home", products=catalog.PRODUCTS
    )


async def _category(request: Request) -> Response:
    store = _store(request)
    found = catalog.category(request.path_params["slug"])
    if found is None:
        raise HTTPException(404)
    products = catalog.in_category(found.slug)
    event = {
        "event": "ViewCategory",
        "custom": {"content_category": found.slug, "content_ids": [item.sku for item in products]},
    }
    return store.render(
        request,
        "category.html",
        title=f"{found.name} — Maple & Moss",
        events=[event],
        category=found,
        products=products,
    )


async def _search(request: Request) -> Response:
    store = _store(request)
    query = request.query_params.get("q", "").strip()[:100]
    results = catalog.search(query)
    events = []
    if query:
        custom: dict[str, Any] = {"search_string": query}
        if results:
            custom["content_ids"] = [item.sku for item in results]
        events.append({"event": "Search", "custom": custom})
    return store.render(
        request,
        "search.html",
        title=f"Search: {query} — Maple & Moss",
        events=events,
        query=query,
        products=results,
    )


async def _product(request: Request) -> Response:
    store = _store(request)
    item = catalog.product(request.path_params["sku"])
    if item is None:
        raise HTTPException(404)
    related = [other for other in catalog.in_category(item.category) if other.sku != item.sku][:3]
    return store.render(
        request,
        "product.html",
        title=f"{item.name} — Maple & Moss",
        product=item,
        category=catalog.category(item.category),
        add_to_cart=_product_custom(item),
        related=related,
    )


async def _cart(request: Request) -> Response:
    store = _store(request)
    lines = store.carts.lines(request)
    total = sum(line.total_cents for line in lines)
    return store.render(
        request, "cart.html", title="Your cart — Maple & Moss", lines=lines, total_cents=total
    )


def _quantity(text: str | None, default: int = 1) -> int:
    try:
        return max(0, min(99, int(text or default)))
    except ValueError:
        return default


async def _cart_add(request: Request) -> Response:
    store = _store(request)
    form = await _form(request)
    item = catalog.product(form.get("sku", ""))
    if item is None:
        raise HTTPException(400)
    cart = store.carts.load(request.cookies)
    cart[item.sku] = min(99, cart.get(item.sku, 0) + max(1, _quantity(form.get("quantity"))))
    response: Response
    if _wants_json(request):
        response = JSONResponse(
            {"ok": True, "count": sum(cart.values())}, headers={"cache-control": "no-store"}
        )
    else:
        response = RedirectResponse("/cart", status_code=303)
    store.carts.save(response, request, cart)
    return response


async def _cart_update(request: Request) -> Response:
    store = _store(request)
    form = await _form(request)
    cart = store.carts.load(request.cookies)
    sku = form.get("sku", "")
    if catalog.product(sku) is not None:
        quantity = _quantity(form.get("quantity"), 0)
        if quantity:
            cart[sku] = quantity
        else:
            cart.pop(sku, None)
    response = RedirectResponse("/cart", status_code=303)
    store.carts.save(response, request, cart)
    return response


async def _signup(request: Request) -> Response:
    """A newsletter/account signup. The browser reports Signup (with the email, hashed by our server)."""
    store = _store(request)
    if request.method == "POST":
        form = await _form(request)
        email = form.get("email", "")
        if not _EMAIL.match(email):
            if _wants_json(request):
                return JSONResponse(
                    {"ok": False, "error": "Please enter a valid email address."}, status_code=400
                )
            return store.render(
                request,
                "signup.html",
                title="Join — Maple & Moss",
                error="Please enter a valid email address.",
                welcome=False,
                status_code=400,
            )
        if _wants_json(request):
            return JSONResponse({"ok": True, "first_name": form.get("first_name", "")})
        return RedirectResponse("/signup?welcome=1", status_code=303)
    return store.render(
        request,
        "signup.html",
        title="Join — Maple & Moss",
        error=None,
        welcome=bool(request.query_params.get("welcome")),
    )


async def _picture(request: Request) -> Response:
    item = catalog.product(request.path_params["sku"])
    if item is None:
        raise HTTPException(404)
    return Response(
        catalog.product_svg(item),
        media_type="image/svg+xml",
        headers={"cache-control": "public, max-age=86400"},
    )


async def _to_www(request: Request) -> Response:
    return RedirectResponse(_store(request).site(request)["www"] + "/", status_code=302)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    store: Store | None = getattr(request.app.state, "store", None)
    if store is None or status != 404:
        return Response(
            "Bad request" if status == 400 else "Not found", status_code=status, media_type="text/plain"
        )
    return store.render(request, "not_found.html", title="Not found — Maple & Moss", status_code=404)


# --- checkout.shop.localhost ---------------------------------------------------------------------


async def _checkout(request: Request) -> Response:
    store = _store(request)
    lines = store.carts.lines(request)
    error = None
    form: dict[str, str] = {}
    if request.method == "POST":
        form = await _form(request)
        if not lines:
            return RedirectResponse(store.site(request)["www"] + "/cart", status_code=303)
        if not _EMAIL.match(form.get("email", "")):
            error = "Please enter a valid email address."
        elif not form.get("first_name"):
            error = "Please tell us your first name."
        else:
            order = store.orders.create(
                email=form["email"],
                first_name=form.get("first_name", ""),
                last_name=form.get("last_name", ""),
                city=form.get("city", ""),
                zip=form.get("zip", ""),
                lines=lines,
            )
            # A redirect to a linked domain: the middleware adds the `_tlx` click token to it.
            return RedirectResponse(
                store.partner_url(store.visit(request), "/pay", order=order.order_id), status_code=303
            )
    events = (
        [{"event": "Checkout", "custom": _lines_custom(lines)}] if lines and request.method == "GET" else []
    )
    total = sum(line.total_cents for line in lines)
    return store.render(
        request,
        "checkout.html",
        title="Checkout — Maple & Moss",
        step=2,
        events=events,
        lines=lines,
        total_cents=total,
        error=error,
        form=form,
        status_code=400 if error else 200,
    )


async def _confirmation(request: Request) -> Response:
    store = _store(request)
    order = store.orders.get(request.query_params.get("order"))
    if order is None:
        raise HTTPException(404)
    if not order.paid:
        return RedirectResponse(
            store.partner_url(store.visit(request), "/pay", order=order.order_id), status_code=303
        )
    custom = order_custom(order)
    if store.orders.claim_server_purchase(order):
        # The same order id as the page's tracklayer.track("Purchase", ...): both are `Purchase:<order id>`.
        order.server_purchase_id = (
            track(
                request,
                "Purchase",
                user={
                    "email": order.email,
                    "first_name": order.first_name,
                    "last_name": order.last_name,
                    "city": order.city,
                    "zip": order.zip,
                    "country": "US",
                },
                custom=custom,
            )
            or "not-queued"
        )
    response = store.render(
        request,
        "confirmation.html",
        title=f"Thank you — order {order.order_id}",
        step=4,
        events=[{"event": "Purchase", "custom": custom}],
        order=order,
    )
    store.carts.save(response, request, {})
    return response


# --- pay.localhost (the payment partner) ---------------------------------------------------------


def _luhn(number: str) -> bool:
    digits = [int(ch) for ch in number][::-1]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * digit, 10)) for digit in digits[1::2])
    return total % 10 == 0


async def _pay(request: Request) -> Response:
    store = _store(request)
    form: dict[str, str] = {}
    if request.method == "POST":
        form = await _form(request)
        order_id = form.get("order")
    else:
        order_id = request.query_params.get("order")
    order = store.orders.get(order_id)
    if order is None:
        raise HTTPException(404)
    confirmation = f"{store.site(request)['checkout']}/confirmation?order={order.order_id}"
    if order.paid:
        return RedirectResponse(confirmation, status_code=303)
    error = None
    if request.method == "POST":
        number = re.sub(r"[\s-]", "", form.get("card_number", ""))
        if not (number.isdigit() and 12 <= len(number) <= 19 and _luhn(number)):
            error = "That card number does not look right (try 4242 4242 4242 4242)."
        elif not re.match(r"^\d{2}\s*/\s*\d{2}$", form.get("expiry", "")):
            error = "Please enter the expiry date as MM/YY."
        else:
            order.paid = True
            return RedirectResponse(confirmation, status_code=303)
    payment_info = {
        "value": round(order.total_cents / 100, 2),
        "currency": CURRENCY,
        "order_id": order.order_id,
    }
    return store.render(
        request,
        "pay.html",
        title="PayLocal — secure payment",
        order=order,
        payment_info=payment_info,
        error=error,
        form=form,
        status_code=400 if error else 200,
    )


async def _gift_cards(request: Request) -> Response:
    store = _store(request)
    return store.render(
        request, "gift_cards.html", title="Maple & Moss gift cards — PayLocal", amounts=(25, 50, 100)
    )


async def _to_gift_cards(request: Request) -> Response:
    return RedirectResponse("/gift-cards", status_code=302)
