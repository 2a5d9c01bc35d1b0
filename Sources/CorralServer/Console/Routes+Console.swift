import CorralCore
import CorralHost
import Foundation
import Hummingbird
import Logging
import NIOCore

extension CorralServer {
    /// The console under `/console`, on the listener `auth` describes. On the unix socket every
    /// request is the operator's (as every API request there is the local tenant's); on TCP a
    /// browser logs in with a token and gets a cookie. docs/console.md describes the pages.
    func addConsoleRoutes(to router: Router<CorralRequestContext>, auth: AuthMode) {
        let routes = router.group("console").add(
            middleware: ConsoleErrorMiddleware(
                redactions: configuration.stateDirectory.map { [($0, "$STATE")] } ?? []))

        routes.get("") { _, _ in ConsoleHTTP.redirect(to: "/console/sessions") }
        routes.get("static/:name") { _, context in try Self.asset(context) }
        addConsoleLoginRoutes(to: routes, auth: auth)

        routes.get("check") { request, context -> Response in
            do {
                _ = try await consoleAccess(request, context, auth: auth)
                return Response(status: .noContent, headers: ConsoleHTTP.headers(contentType: "text/plain"))
            } catch is ConsoleRefusal {
                return Response(status: .unauthorized, headers: ConsoleHTTP.headers(contentType: "text/plain"))
            }
        }

        addConsoleSessionRoutes(to: routes, auth: auth)
        addConsoleSandboxRoutes(to: routes, auth: auth)
        addConsolePoolRoutes(to: routes, auth: auth)
        addConsoleTenantRoutes(to: routes, auth: auth)

        // Anything else under /console is a page that does not exist: said as a page.
        routes.get("**") { _, _ -> Response in throw CorralError.notFound("there is no such page") }
    }

    /// Who asks, or a refusal that sends a browser to the login page.
    func consoleAccess(_ request: Request, _ context: CorralRequestContext, auth: AuthMode) async throws
        -> ConsoleAccess
    {
        if case .local = auth { return ConsoleAccess(viewer: .operator, csrf: nil) }
        let next = ConsoleHTTP.safeNext(request.uri.path + (request.uri.query.map { "?" + $0 } ?? ""))
        guard let cookie = ConsoleHTTP.cookie(ConsoleHTTP.loginCookie, in: request), !cookie.isEmpty else {
            throw ConsoleRefusal.login(reason: nil, next: next)
        }
        guard let login = console.logins.find(cookie) else {
            throw ConsoleRefusal.login(reason: "ended", next: next)
        }
        // The token the login was made with must still work: a removed tenant, or a replaced
        // operator token, ends every login made with it.
        let current: Bool
        switch login.viewer {
        case .operator: current = console.operatorToken.isCurrent(login.credentialSHA256)
        case .tenant(let tenant):
            current = (try? await tenants.isCurrent(tenant, tokenSHA256: login.credentialSHA256)) ?? false
        }
        guard current else {
            console.logins.close(cookie)
            throw ConsoleRefusal.login(reason: "revoked", next: next)
        }
        return ConsoleAccess(viewer: login.viewer, csrf: login.csrf)
    }

    /// A POST's checks: from this site, logged in, and carrying the login's form token.
    func consolePostAccess(_ request: Request, _ context: CorralRequestContext, auth: AuthMode, form: [String: String])
        async throws -> ConsoleAccess
    {
        try ConsoleHTTP.checkSameOrigin(request)
        let access = try await consoleAccess(request, context, auth: auth)
        if let csrf = access.csrf {
            guard let sent = form["csrf"], ConsoleLogins.constantTimeEqual(sent, csrf) else {
                throw ConsoleRefusal.crossSite
            }
        }
        return access
    }

    static func asset(_ context: CorralRequestContext) throws -> Response {
        let name = try context.parameters.require("name")
        let (body, type): (String, String)
        switch name {
        case "console.css": (body, type) = (ConsoleAssets.css, "text/css; charset=utf-8")
        case "console.js": (body, type) = (ConsoleAssets.javascript, "text/javascript; charset=utf-8")
        case "icon.svg": (body, type) = (ConsoleAssets.icon, "image/svg+xml")
        default: throw CorralError.notFound("there is no such file")
        }
        return Response(
            status: .ok, headers: ConsoleHTTP.headers(contentType: type, cache: true),
            body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    /// Which part of a page a list's script asks for (`X-Console-Fragment`), if any.
    static func fragment(_ request: Request) -> String? {
        ConsoleHTTP.header("x-console-fragment", in: request)
    }
}

/// Errors of console routes as pages: a 404 page for what does not exist (another tenant's
/// session included), the login page for a login that ended, and a plain page for the rest.
/// Messages are escaped like everything else, and host paths are replaced.
struct ConsoleErrorMiddleware: RouterMiddleware {
    typealias Context = CorralRequestContext
    let redactions: [(path: String, name: String)]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let refusal as ConsoleRefusal {
            switch refusal {
            case .login(let reason, let next):
                // A script's request (a stream, a fragment) gets a status it can act on; a page
                // goes to the login page.
                if request.method != .get || request.headers[.accept]?.contains("text/event-stream") == true
                    || CorralServer.fragment(request) != nil || request.uri.path.contains("/events/")
                    || request.uri.path.hasSuffix("/stream") || request.uri.path == "/console/check"
                {
                    return Response(status: .unauthorized, headers: ConsoleHTTP.headers(contentType: "text/plain"))
                }
                return ConsoleHTTP.redirect(
                    to: ConsoleHTTP.link("/console/login", [("reason", reason), ("next", next)]))
            case .crossSite:
                return errorPage(
                    403, "Refused",
                    "The request did not come from this console's own page. Go back, reload the page and try again.")
            case .forbidden(let message):
                return errorPage(403, "Not for tenants", message)
            }
        } catch {
            let (status, body) = ErrorMiddleware.describe(error)
            var message = body.message
            for (path, name) in redactions where !path.isEmpty {
                message = message.replacingOccurrences(of: path, with: name)
            }
            if status >= 500 {
                context.logger.warning(
                    "console request failed",
                    metadata: ["route": "\(context.endpointPath ?? "?")", "error": "\(message)"])
            }
            switch status {
            case 404: return errorPage(404, "Not found", "Nothing here, or nothing you may see: \(message).")
            case 400..<500: return errorPage(status, "Cannot show that", message)
            default: return errorPage(status, "Something went wrong", message)
            }
        }
    }

    func errorPage(_ status: Int, _ title: String, _ message: String) -> Response {
        let body: HTML = """
            <h1>\(title)</h1>
            <p class="notice error">\(message)</p>
            <p><a href="/console/sessions">Sessions</a> · <a href="/console/sandboxes">Sandboxes</a> · \
            <a href="/console/pools">Pools</a></p>
            """
        return ConsoleHTTP.page(
            ConsoleLayout(title: title, section: .none, access: nil, body: body).render(),
            status: HTTPResponse.Status(code: status))
    }
}
