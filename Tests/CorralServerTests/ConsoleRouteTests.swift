import CorralCore
import CorralSession
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import CorralServer

@Suite("Console: pages, logins and who sees what")
struct ConsoleRouteTests {
    @Test("without a login, a page sends the browser to the login page, and a script's request gets 401")
    func needsLogin() async throws {
        try await ConsoleFixture.with { fixture in
            let id = try await fixture.session(of: "tenant-a", [])
            try await fixture.test { browser in
                let page = try await browser.get("/console/sessions/\(id)")
                #expect(page.status == .seeOther)
                #expect(page.location == "/console/login?next=%2Fconsole%2Fsessions%2F\(id)")
                let login = try await browser.get(try #require(page.location))
                #expect(login.status == .ok)
                #expect(login.text.contains("name=\"token\" type=\"password\""))
                #expect(try await browser.get("/console/sessions/\(id)/stream").status == .unauthorized)
                #expect(try await browser.get("/console/sessions/\(id)/events/1").status == .unauthorized)
                #expect(try await browser.get("/console/check").status == .unauthorized)
                // A bearer token is the API's: the console takes none.
                let bearer = try await browser.get(
                    "/console/sessions", headers: [("Authorization", "Bearer \(fixture.tokenA)")])
                #expect(bearer.status == .seeOther)
            }
        }
    }

    @Test("a tenant logs in with its token: an HttpOnly, SameSite=Strict cookie, and the token is sent back nowhere")
    func login() async throws {
        try await ConsoleFixture.with { fixture in
            try await fixture.test { browser in
                let answer = try await browser.login(fixture.tokenA, next: "/console/pools")
                #expect(answer.status == .seeOther)
                #expect(answer.location == "/console/pools")
                let cookie = try #require(answer.headers[values: .setCookie].first { $0.hasPrefix("corral_console=") })
                #expect(
                    cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict")
                        && cookie.contains("Path=/console"))
                #expect(!cookie.contains(fixture.tokenA))
                let sessions = try await browser.get("/console/sessions")
                #expect(sessions.status == .ok)
                #expect(sessions.text.contains("tenant <b>tenant-a</b>"))
                #expect(sessions.headers[.contentSecurityPolicy]?.contains("script-src 'self'") == true)
                #expect(sessions.headers[.cacheControl] == "no-store")
                for response in [answer, sessions] {
                    #expect(!response.text.contains(fixture.tokenA))
                    #expect(!response.headers.map(\.value).joined().contains(fixture.tokenA))
                }
                // Somewhere else to go after logging in is dropped: no open redirect.
                browser.forgetCookies()
                let elsewhere = try await browser.login(fixture.tokenA, next: "//evil.example/console/x")
                #expect(elsewhere.location == "/console/sessions")
            }
        }
    }

    @Test("an unknown token, or a login form from elsewhere, gets the login page again with a message")
    func refusedLogins() async throws {
        try await ConsoleFixture.with { fixture in
            try await fixture.test { browser in
                let unknown = try await browser.login("corral_not-a-real-token")
                #expect(unknown.status == .unauthorized)
                #expect(unknown.text.contains("That token is not valid"))
                #expect(browser.cookies["corral_console"] == nil)
                // A POST that did not come from this console's login form: no form token.
                browser.forgetCookies()
                let forged = try await browser.post("/console/login", form: [("token", fixture.tokenA)])
                #expect(forged.status == .forbidden)
                #expect(browser.cookies["corral_console"] == nil)
                // A form posted from another site.
                let page = try await browser.get("/console/login")
                let token = try #require(ConsoleBrowser.hiddenValue("csrf", in: page.text))
                let crossSite = try await browser.post(
                    "/console/login", form: [("csrf", token), ("token", fixture.tokenA)],
                    headers: [("Sec-Fetch-Site", "cross-site")])
                #expect(crossSite.status == .forbidden)
                #expect(browser.cookies["corral_console"] == nil)
            }
        }
    }

    @Test("a tenant sees its own sessions only; another tenant's is the same 404 page as a missing one")
    func tenantsApart() async throws {
        try await ConsoleFixture.with { fixture in
            let mine = try await fixture.session(
                of: "tenant-a", [NewEvent(type: "user.message", data: ["text": "mine"])])
            let theirs = try await fixture.session(
                of: "tenant-b", [NewEvent(type: "user.message", data: ["text": "theirs"])])
            try await fixture.test { browser in
                try await browser.login(fixture.tokenA)
                let list = try await browser.get("/console/sessions").text
                #expect(list.contains(mine.rawValue) && !list.contains(theirs.rawValue))
                #expect(try await browser.get("/console/sessions/\(mine)").status == .ok)
                let foreign = try await browser.get("/console/sessions/\(theirs)")
                let missing = try await browser.get("/console/sessions/se-missing000000")
                #expect(foreign.status == .notFound && missing.status == .notFound)
                #expect(
                    foreign.text.replacingOccurrences(of: theirs.rawValue, with: "ID")
                        == missing.text.replacingOccurrences(of: "se-missing000000", with: "ID"))
                #expect(!foreign.text.contains("theirs"))
                for path in ["events/1", "stream"] {
                    #expect(try await browser.get("/console/sessions/\(theirs)/\(path)").status == .notFound)
                }
                #expect(try await browser.get("/console/sessions/not%20an%20id").status == .notFound)
                #expect(try await browser.get("/console/sandboxes/sb-missing00000").status == .notFound)
                #expect(try await browser.get("/console/no/such/page").status == .notFound)
                let tenants = try await browser.get("/console/tenants")
                #expect(tenants.status == .forbidden)
                #expect(try await browser.get("/console/sessions?tenant=tenant-b").text.contains("No sessions match"))
                // The event as JSON, exactly as stored.
                let event = try await browser.get("/console/sessions/\(mine)/events/1")
                #expect(event.status == .ok)
                #expect(event.headers[.contentType] == "application/json; charset=utf-8")
                #expect(event.text.contains("\"text\":\"mine\""))
                #expect(try await browser.get("/console/sessions/\(mine)/events/2").status == .notFound)
            }
        }
    }

    @Test("a hostile session's page and list show its text escaped, cut, and with nothing that runs")
    func hostilePage() async throws {
        try await ConsoleFixture.with { fixture in
            let id = try await fixture.session(of: "tenant-a", HostileEvents.all)
            try await fixture.test { browser in
                try await browser.login(fixture.tokenA)
                for path in ["/console/sessions/\(id)", "/console/sessions"] {
                    let page = try await browser.get(path)
                    #expect(page.status == .ok)
                    ConsoleEscapingTests.expectInert(page.text)
                    // The page's one script is the console's own file.
                    #expect(page.text.components(separatedBy: "<script").count == 2)
                    #expect(page.text.contains("<script src=\"/console/static/console.js?v="))
                }
                let page = try await browser.get("/console/sessions/\(id)").text
                #expect(page.contains("characters cut"))
                #expect(page.contains("\u{241B}[31m"))
                #expect(page.contains("unknown outcome"))
                #expect(page.count < 200_000, "a 300,000-character line is not sent whole: \(page.count)")
            }
        }
    }

    @Test("the operator's console token is made on the unix socket only, opens everything, and is no API token")
    func operatorToken() async throws {
        try await ConsoleFixture.with { fixture in
            let theirs = try await fixture.session(of: "tenant-b", [])
            let token = try await Self.mintOperatorToken(fixture)
            #expect(token.hasPrefix("corral_operator_"))
            let stored = try String(
                contentsOf: fixture.state.appendingPathComponent("console-operator.json"), encoding: .utf8)
            #expect(!stored.contains(token), "only the token's hash is kept")
            let mode =
                try FileManager.default.attributesOfItem(
                    atPath: fixture.state.appendingPathComponent("console-operator.json").path)[.posixPermissions]
                as? Int
            #expect(mode == 0o600)
            try await fixture.test { browser in
                // Not on TCP.
                let refused = try await browser.post("/console/operator-token", form: [])
                #expect(refused.status == .forbidden)
                #expect(!refused.text.contains("corral_operator_"))
                // Not for the API.
                let api = try await browser.get("/v1/sessions", headers: [("Authorization", "Bearer \(token)")])
                #expect(api.status == .unauthorized)
                try await browser.login(token)
                let list = try await browser.get("/console/sessions").text
                #expect(list.contains(theirs.rawValue) && list.contains("tenant-b"))
                let tenants = try await browser.get("/console/tenants")
                #expect(tenants.status == .ok)
                #expect(tenants.text.contains("tenant-a") && tenants.text.contains("tenant-b"))
                #expect(try await browser.get("/console/sessions/\(theirs)").status == .ok)
                // A new token replaces the old one: logins made with it end.
                _ = try await Self.mintOperatorToken(fixture)
                let ended = try await browser.get("/console/sessions")
                #expect(ended.status == .seeOther)
                #expect(ended.location?.hasPrefix("/console/login?reason=revoked") == true)
                #expect(try await browser.login(token).status == .unauthorized)
            }
        }
    }

    @Test("on the unix socket every request is the operator's, without a login")
    func unixSocket() async throws {
        try await ConsoleFixture.with { fixture in
            let theirs = try await fixture.session(of: "tenant-a", [])
            try await fixture.test(auth: .local) { browser in
                let list = try await browser.get("/console/sessions")
                #expect(list.status == .ok && list.text.contains(theirs.rawValue))
                #expect(list.text.contains("operator (unix socket)"))
                #expect(try await browser.get("/console/tenants").status == .ok)
                #expect(try await browser.get("/console/login").status == .seeOther)
            }
        }
    }

    @Test("a removed tenant's login ends: its next page goes to the login page, which says why")
    func removedTenant() async throws {
        try await ConsoleFixture.with { fixture in
            try await fixture.test { browser in
                try await browser.login(fixture.tokenB)
                #expect(try await browser.get("/console/sessions").status == .ok)
                try await fixture.server.tenants.remove(TenantID(unchecked: "tenant-b"))
                let page = try await browser.get("/console/sandboxes")
                #expect(page.status == .seeOther)
                let login = try await browser.get(try #require(page.location))
                #expect(login.text.contains("no longer works"))
                #expect(try await browser.get("/console/check").status == .unauthorized)
            }
        }
    }

    @Test("logging out needs the login's form token and a request from this site")
    func logout() async throws {
        try await ConsoleFixture.with { fixture in
            try await fixture.test { browser in
                try await browser.login(fixture.tokenA)
                let csrf = try await browser.csrf()
                #expect(try await browser.post("/console/logout", form: [("csrf", "wrong")]).status == .forbidden)
                #expect(try await browser.post("/console/logout", form: []).status == .forbidden)
                let crossSite = try await browser.post(
                    "/console/logout", form: [("csrf", csrf)], headers: [("Sec-Fetch-Site", "cross-site")])
                #expect(crossSite.status == .forbidden)
                #expect(try await browser.get("/console/sessions").status == .ok, "still logged in")
                let out = try await browser.post("/console/logout", form: [("csrf", csrf)])
                #expect(out.status == .seeOther)
                #expect(out.location == "/console/login?reason=logged-out")
                #expect(try await browser.get("/console/sessions").status == .seeOther)
            }
        }
    }

    @Test("list pages answer with their live part alone when a script asks, and say when the engine is away")
    func fragments() async throws {
        try await ConsoleFixture.with { fixture in
            try await fixture.session(of: "tenant-a", [NewEvent(type: "user.message", data: ["text": "hello"])])
            try await fixture.test { browser in
                try await browser.login(fixture.tokenA)
                let fragment = try await browser.get(
                    "/console/sessions", headers: [("X-Console-Fragment", "sessions-live")])
                #expect(fragment.status == .ok)
                #expect(!fragment.text.contains("<html") && fragment.text.contains("<table"))
                let sandboxes = try await browser.get("/console/sandboxes")
                #expect(sandboxes.status == .ok)
                #expect(sandboxes.text.contains("The engine did not answer"))
                #expect(!sandboxes.text.contains(fixture.state.path), "no host path on a page")
                let pools = try await browser.get("/console/pools")
                #expect(pools.status == .ok && pools.text.contains("No pools"))
                let css = try await browser.get("/console/static/console.css")
                #expect(css.status == .ok && css.headers[.cacheControl]?.contains("immutable") == true)
                #expect(try await browser.get("/console/static/other.js").status == .notFound)
            }
        }
    }

    @Test("no token reaches the log, whatever the login did")
    func tokensNotLogged() async throws {
        try await ConsoleFixture.with { fixture in
            let operatorToken = try await Self.mintOperatorToken(fixture)
            try await fixture.test { browser in
                try await browser.login(fixture.tokenA)
                try await browser.get("/console/sessions")
                browser.forgetCookies()
                try await browser.login(operatorToken)
                try await browser.login("corral_wrong-\(fixture.tokenB)")
            }
            let logs = fixture.logs.all
            #expect(logs.contains { $0.contains("console login") }, "the logins are logged: \(logs.suffix(5))")
            for token in fixture.tokens + [operatorToken] {
                #expect(!logs.contains { $0.contains(token) }, "a token in the log")
            }
        }
    }

    static func mintOperatorToken(_ fixture: ConsoleFixture) async throws -> String {
        let app = Application(router: fixture.server.listenerRouter(auth: .local))
        return try await app.test(.router) { client in
            let response = try await client.execute(uri: "/console/operator-token", method: .post)
            #expect(response.status == .created)
            return String(buffer: response.body).trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }
}
