import CorralCore
import CorralHost
import Foundation
import Hummingbird
import Logging
import NIOCore

extension CorralServer {
    func addConsoleLoginRoutes(to routes: RouterGroup<CorralRequestContext>, auth: AuthMode) {
        routes.get("login") { request, context -> Response in
            if case .local = auth { return ConsoleHTTP.redirect(to: "/console/sessions") }
            let query = request.uri.queryParameters
            let reason = query["reason"].map(String.init)
            let next = ConsoleHTTP.safeNext(query["next"].map(String.init))
            return loginPage(request, message: Self.loginMessage(reason), next: next, status: .ok)
        }

        routes.post("login") { request, context -> Response in
            guard case .tokens = auth else { return ConsoleHTTP.redirect(to: "/console/sessions") }
            try ConsoleHTTP.checkSameOrigin(request)
            let form = try await ConsoleHTTP.form(request)
            let next = ConsoleHTTP.safeNext(form["next"])
            // The login form's own token, from its cookie: a page elsewhere cannot log a
            // browser in with a token of its choosing.
            guard let sent = form["csrf"], let expected = ConsoleHTTP.cookie(ConsoleHTTP.loginFormCookie, in: request),
                !expected.isEmpty, ConsoleLogins.constantTimeEqual(sent, expected)
            else {
                return loginPage(
                    request, message: ("The login form had expired. Try again.", true), next: next, status: .forbidden)
            }
            let token = (form["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            guard let (viewer, credential) = try await authenticateConsole(token: token, context: context) else {
                return loginPage(
                    request, message: ("That token is not valid (or no longer is).", true), next: next,
                    status: .unauthorized)
            }
            let login = console.logins.open(viewer: viewer, credentialSHA256: credential)
            context.logger.info("console login", metadata: ["viewer": "\(viewer.name)"])
            let secure = ConsoleHTTP.isHTTPS(request)
            let maxAge = Int(configuration.console.loginLifetime.seconds)
            return ConsoleHTTP.redirect(
                to: next ?? "/console/sessions",
                cookies: [
                    ConsoleHTTP.cookie(
                        ConsoleHTTP.loginCookie, login.id, path: "/console", maxAge: maxAge, secure: secure),
                    ConsoleHTTP.cookie(
                        ConsoleHTTP.loginFormCookie, "", path: "/console/login", maxAge: 0, secure: secure),
                ])
        }

        routes.post("logout") { request, context -> Response in
            let form = try await ConsoleHTTP.form(request)
            _ = try await consolePostAccess(request, context, auth: auth, form: form)
            if let cookie = ConsoleHTTP.cookie(ConsoleHTTP.loginCookie, in: request) { console.logins.close(cookie) }
            return ConsoleHTTP.redirect(
                to: "/console/login?reason=logged-out",
                cookies: [
                    ConsoleHTTP.cookie(
                        ConsoleHTTP.loginCookie, "", path: "/console", maxAge: 0, secure: ConsoleHTTP.isHTTPS(request))
                ])
        }

        // The operator's console token, made and revoked on the unix socket only (the socket is
        // the operator's: mode 0600 in a 0700 directory). Shown once; only its hash is kept.
        routes.post("operator-token") { request, context -> Response in
            try requireUnixSocket(auth)
            try ConsoleHTTP.checkSameOrigin(request)
            let token = try console.operatorToken.mint()
            context.logger.info("made a new console operator token; logins made with the old one end")
            var headers = ConsoleHTTP.headers(contentType: "text/plain; charset=utf-8")
            headers[.cacheControl] = "no-store"
            return Response(
                status: .created, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: token + "\n")))
        }

        routes.delete("operator-token") { request, context -> Response in
            try requireUnixSocket(auth)
            try ConsoleHTTP.checkSameOrigin(request)
            guard try console.operatorToken.revoke() else {
                throw CorralError.notFound("there is no console operator token")
            }
            context.logger.info("revoked the console operator token")
            return Response(status: .noContent, headers: ConsoleHTTP.headers(contentType: "text/plain"))
        }
    }

    func requireUnixSocket(_ auth: AuthMode) throws {
        guard case .local = auth else {
            throw ConsoleRefusal.forbidden(
                "The operator's console token is made on the service's host, through its unix socket: "
                    + "curl --unix-socket $STATE/corral.sock -X POST http://corral/console/operator-token")
        }
    }

    /// Whom a token presented at the login form belongs to: the operator's console token, or a
    /// tenant's. A token stored under a reserved name is refused as the API refuses it.
    func authenticateConsole(token: String, context: CorralRequestContext) async throws -> (ConsoleViewer, String)? {
        guard !token.isEmpty, token.utf8.count <= 256 else { return nil }
        if let hash = try console.operatorToken.authenticate(token) { return (.operator, hash) }
        switch try await tenants.authenticate(token: token) {
        case .tenant(let tenant, let hash): return (.tenant(tenant), hash)
        case .reserved(let name):
            context.logger.warning(
                "refused a console login with a token stored under a reserved tenant name; remove it with `corral tenant rm`",
                metadata: ["tenant": "\(name)"])
            return nil
        case .unknown: return nil
        }
    }

    static func loginMessage(_ reason: String?) -> (String, Bool)? {
        switch reason {
        case "ended"?: ("Your console login ended (it expired, or the service restarted). Log in again.", true)
        case "revoked"?: ("The token you logged in with no longer works. Log in with a current one.", true)
        case "logged-out"?: ("You are logged out.", false)
        default: nil
        }
    }

    func loginPage(_ request: Request, message: (String, Bool)?, next: String?, status: HTTPResponse.Status)
        -> Response
    {
        let formToken = ConsoleLogins.randomToken()
        let notice: HTML = message.map { "<p class=\"notice\($0.1 ? " error" : "")\" role=\"alert\">\($0.0)</p>" } ?? ""
        let nextField: HTML = next.map { "<input type=\"hidden\" name=\"next\" value=\"\($0)\">" } ?? ""
        let body: HTML = """
            <div class="login">
            <h1>Log in to the corral console</h1>
            \(notice)
            <form method="post" action="/console/login">
            <input type="hidden" name="csrf" value="\(formToken)">\(nextField)
            <label for="token">Token</label>
            <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required autofocus>
            <button type="submit">Log in</button>
            </form>
            <p class="muted">A tenant's token (from <code>corral tenant add</code>) shows that tenant's sessions and \
            sandboxes. The operator makes a console token on the service's host: <code>curl --unix-socket \
            $STATE/corral.sock -X POST http://corral/console/operator-token</code>.</p>
            </div>
            """
        return ConsoleHTTP.page(
            ConsoleLayout(title: "Log in", section: .none, access: nil, body: body).render(), status: status,
            cookies: [
                ConsoleHTTP.cookie(
                    ConsoleHTTP.loginFormCookie, formToken, path: "/console/login", maxAge: 3600,
                    secure: ConsoleHTTP.isHTTPS(request))
            ])
    }
}
