import CorralCore
import CorralHost
import Foundation
import Hummingbird
import NIOCore

/// The console's HTTP pieces: responses with the security headers every page carries,
/// cookies, form bodies, and the redirects and errors routes throw.
enum ConsoleHTTP {
    static let loginCookie = "corral_console"
    static let loginFormCookie = "corral_console_login"

    /// No inline script or style and nothing from elsewhere: the console's own script and
    /// style sheet only. Even markup that slipped past escaping could run nothing.
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        + "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

    static func headers(contentType: String, cache: Bool = false) -> HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        headers[.contentSecurityPolicy] = contentSecurityPolicy
        headers[.xContentTypeOptions] = "nosniff"
        headers[.cacheControl] = cache ? "public, max-age=31536000, immutable" : "no-store"
        return headers
    }

    static func page(_ html: HTML, status: HTTPResponse.Status = .ok, cookies: [String] = []) -> Response {
        var headers = headers(contentType: "text/html; charset=utf-8")
        if !cookies.isEmpty { headers[values: .setCookie] = cookies }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: html.text)))
    }

    static func redirect(to location: String, cookies: [String] = []) -> Response {
        var headers = headers(contentType: "text/plain; charset=utf-8")
        headers[.location] = location
        if !cookies.isEmpty { headers[values: .setCookie] = cookies }
        return Response(status: .seeOther, headers: headers)
    }

    /// `name=value; Path=...; HttpOnly; SameSite=Strict`, with `Secure` when the request came
    /// over HTTPS through a proxy (corrald itself speaks plain HTTP).
    static func cookie(_ name: String, _ value: String, path: String, maxAge: Int, secure: Bool) -> String {
        "\(name)=\(value); Path=\(path); Max-Age=\(maxAge); HttpOnly; SameSite=Strict\(secure ? "; Secure" : "")"
    }

    static func isHTTPS(_ request: Request) -> Bool {
        header("x-forwarded-proto", in: request)?.lowercased() == "https"
    }

    /// A header swift-http-types has no name for, by its lower-case name.
    static func header(_ canonicalName: String, in request: Request) -> String? {
        request.headers.first { $0.name.canonicalName == canonicalName }?.value
    }

    /// The value of cookie `name`, from every Cookie header.
    static func cookie(_ name: String, in request: Request) -> String? {
        for field in request.headers[values: .cookie] {
            for pair in field.split(separator: ";") {
                let trimmed = pair.trimmingCharacters(in: .whitespaces)
                guard let equals = trimmed.firstIndex(of: "=") else { continue }
                if trimmed[..<equals] == name { return String(trimmed[trimmed.index(after: equals)...]) }
            }
        }
        return nil
    }

    /// A form body (`application/x-www-form-urlencoded`), at most 16 KiB.
    static func form(_ request: Request) async throws -> [String: String] {
        let type = request.headers[.contentType]?.lowercased() ?? ""
        guard type.hasPrefix("application/x-www-form-urlencoded") else {
            throw CorralError.invalidArgument("the console takes forms (application/x-www-form-urlencoded)")
        }
        let bytes = try await collect(request, limit: 16 << 10)
        return parseForm(String(decoding: bytes, as: UTF8.self))
    }

    static func parseForm(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = parts.first.map(String.init).flatMap(decodeComponent) else { continue }
            let value = parts.count > 1 ? decodeComponent(String(parts[1])) ?? "" : ""
            if fields[name] == nil { fields[name] = value }
        }
        return fields
    }

    static func decodeComponent(_ text: String) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// A POST from another site is refused whatever it carries: browsers say where a request
    /// comes from in `Sec-Fetch-Site` and `Origin`. With SameSite=Strict cookies and a token
    /// in every form, this is the third of three locks against cross-site requests.
    static func checkSameOrigin(_ request: Request) throws {
        if let site = header("sec-fetch-site", in: request)?.lowercased(),
            site != "same-origin" && site != "none"
        {
            throw ConsoleRefusal.crossSite
        }
        if let origin = request.headers[.origin] {
            guard let host = request.head.authority,
                origin == "http://\(host)" || origin == "https://\(host)"
            else { throw ConsoleRefusal.crossSite }
        }
    }

    /// A path inside the console to go back to after logging in; anything else (another site,
    /// `//host`, a backslash trick) is dropped.
    static func safeNext(_ text: String?) -> String? {
        guard let text, text.hasPrefix("/console/"), !text.hasPrefix("//"), !text.contains("\\"),
            !text.contains("//"), text.count < 512,
            !text.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value > 0x7E })
        else { return nil }
        return text
    }

    /// A path with its query, as links in pages spell them. Values are percent-encoded.
    static func link(_ path: String, _ query: [(String, String?)] = []) -> String {
        let pairs = query.compactMap { name, value in value.map { "\(name)=\(encode($0))" } }
        return pairs.isEmpty ? path : path + "?" + pairs.joined(separator: "&")
    }

    static func encode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }
}

/// Thrown by console routes; the console's error middleware turns each into its page.
enum ConsoleRefusal: Error, Sendable {
    /// Not logged in, or the login ended: to the login page, saying why.
    case login(reason: String?, next: String?)
    /// A POST from another site, or without the form's token.
    case crossSite
    case forbidden(String)
}
