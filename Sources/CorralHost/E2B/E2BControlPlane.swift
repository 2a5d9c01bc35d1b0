import CorralAPI
import CorralCore
import CorralSandbox
import Foundation
import HTTPTypes
import Hummingbird

/// E2B's control plane (`api.e2b.app`): create, connect, get, list, kill and set the timeout
/// of sandboxes, with an E2B API key (`X-API-Key`) that is a corral tenant token. Every
/// sandbox is looked up as the tenant's own: another tenant's id is E2B's 404.
package struct E2BControlPlane: Sendable {
    package let host: HostAPI
    package let auth: HostAPI.AuthMode

    package init(host: HostAPI, auth: HostAPI.AuthMode) {
        self.host = host
        self.auth = auth
    }

    /// What corral reports as envd's version: the SDK turns features on and off by it. 0.5.7
    /// has stdin, the default user, CloseStdin and octet-stream uploads, and not file metadata
    /// (extended attributes), which corral does not keep.
    package static let envdVersion = "0.5.7"
    package static let clientID = "corral"
    /// E2B's default sandbox timeout, in seconds, and its largest (a day).
    package static let defaultTimeout = 300
    package static let maxTimeout = 86_400

    package var provisioner: Provisioner { host.provisioner }

    // MARK: Authentication

    /// The tenant whose API key the request carries; on the unix socket, the local tenant.
    package func authenticate(_ request: Request, context: inout CorralRequestContext) async throws -> TenantID {
        switch auth {
        case .local:
            context.tenant = .local
            return .local
        case .controlPlane(let currentEpoch):
            // On a worker's link: the control plane checked the API key and names the tenant.
            let tenant = try AuthMiddleware.linkTenant(request, currentEpoch: currentEpoch)
            context.tenant = tenant
            return tenant
        case .tokens:
            guard let key = E2BHeaders.value(request, "x-api-key"), !key.isEmpty else {
                throw E2BAPIError(
                    status: 401, message: "missing API key: send it in the X-API-Key header (E2B_API_KEY)")
            }
            guard let tokens = host.control.tenantTokens else {
                throw E2BAPIError(status: 401, message: "Invalid API key: this host takes no API keys")
            }
            switch try await tokens.authenticate(token: key) {
            case .tenant(let tenant, let tokenSHA256):
                context.tenant = tenant
                context.tokenSHA256 = tokenSHA256
                return tenant
            case .reserved, .unknown:
                throw E2BAPIError(status: 401, message: "Invalid API key: it is not a corral tenant token")
            }
        }
    }

    /// Runs `body` for the tenant, answering every failure in E2B's shape.
    package func answer(
        _ request: Request, _ context: CorralRequestContext,
        _ body: (TenantID, CorralRequestContext) async throws -> Response
    ) async -> Response {
        var context = context
        do {
            let tenant = try await authenticate(request, context: &context)
            return try await body(tenant, context)
        } catch {
            let answer = E2BAPIError(converting: error)
            if answer.status >= 500 {
                context.logger.warning(
                    "E2B request failed", metadata: ["path": "\(request.uri.path)", "error": "\(answer.message)"])
            }
            return answer.response
        }
    }

    // MARK: Sandboxes

    /// The tenant's live sandbox named in the path. Missing, another tenant's, or past its end:
    /// E2B's 404. One past its end is removed on the way.
    package func sandbox(_ idText: String, tenant: TenantID) async throws -> (Sandbox, SandboxRecord) {
        guard let id = SandboxID(idText), let record = try? provisioner.records().read(id), record.tenant == tenant
        else {
            throw E2BAPIError.notFound("sandbox \"\(idText.prefix(80))\" doesn't exist or you don't have access to it")
        }
        let sandbox = provisioner.handle(id, tenant: tenant)
        if let expires = record.expires, expires <= Date() {
            try? await sandbox.remove()
            throw E2BAPIError.notFound("sandbox \"\(id)\" doesn't exist or you don't have access to it")
        }
        return (sandbox, record)
    }

    package func create(_ request: Request, tenant: TenantID, context: CorralRequestContext) async throws -> Response {
        let body = try await E2BJSON.object(request)
        guard let templateID = body["templateID"]?.stringValue, !templateID.isEmpty else {
            throw E2BAPIError.badRequest("templateID is required")
        }
        let timeout = try Self.timeout(body["timeout"])
        // On a control plane with workers, placed as corral's own creates are (docs/workers.md).
        if let placed = try await host.control.e2bCreateElsewhere(
            body, request: request, tenant: tenant, templateID: templateID)
        {
            return placed
        }
        var provision = try provisionRequest(template: templateID)
        provision.tenant = tenant
        provision.ttl = .seconds(timeout)
        provision.labels = try E2BJSON.stringMap(body["metadata"], field: "metadata")
        provision.env = try E2BJSON.stringMap(body["envVars"], field: "envVars")
        let provisioner = self.provisioner
        let request = provision
        let sandbox = try await host.control.admitSandbox(tenant) { try await provisioner.provision(request) }
        do {
            try await host.control.keepOnlyIfTenantRemains(context) { try? await sandbox.remove() }
            let file = E2BSandboxFile(accessToken: E2BSandboxFile.newToken(), templateID: templateID)
            try file.write(try provisioner.records(), sandbox.id)
            return JSONResponse.make(Self.created(sandbox.id, file: file), status: 201)
        } catch {
            try? await sandbox.remove()
            throw error
        }
    }

    /// E2B's template id as a corral template: `base` (the SDK's default) is the template named
    /// `e2b` when the service has one, else the one named `base`, else the default image; any
    /// other id must name one of the service's templates.
    package func provisionRequest(template: String) throws -> ProvisionRequest {
        var request = ProvisionRequest()
        let configuration = provisioner.configuration
        let candidates = template == "base" ? ["e2b", "base"] : [template]
        for name in candidates {
            if let name = TemplateName(name), configuration.template(named: name) != nil {
                request.template = name
                return request
            }
        }
        guard template == "base" else { throw E2BAPIError.notFound("template '\(template.prefix(80))' not found") }
        return request
    }

    package static func timeout(_ value: JSONValue?) throws -> Int {
        guard let value, value != .null else { return defaultTimeout }
        guard let seconds = value.intValue, seconds >= 1, seconds <= Int64(maxTimeout) else {
            throw E2BAPIError.badRequest("timeout must be a whole number of seconds from 1 to \(maxTimeout)")
        }
        return Int(seconds)
    }

    package static func created(_ id: SandboxID, file: E2BSandboxFile) -> JSONValue {
        .object([
            "templateID": .string(file.templateID), "sandboxID": .string(id.rawValue), "clientID": .string(clientID),
            "envdVersion": .string(envdVersion), "envdAccessToken": .string(file.accessToken),
            // Ports take the same token (docs/e2b.md): E2B's header for them is this one's.
            "trafficAccessToken": .string(file.accessToken), "domain": .null,
        ])
    }

    package func connect(_ request: Request, idText: String, tenant: TenantID) async throws -> Response {
        let body = try await E2BJSON.object(request, allowEmpty: true)
        let (sandbox, record) = try await sandbox(idText, tenant: tenant)
        let store = try provisioner.records()
        if body["timeout"] != nil {
            // Connecting never shortens a sandbox's life.
            let end = Date().addingTimeInterval(Double(try Self.timeout(body["timeout"])))
            if let expires = record.expires, expires < end {
                var updated = record
                updated.expires = end
                try await store.save(updated)
            }
        }
        let file = try E2BSandboxFile.readOrMake(store, sandbox.id, template: record.template?.rawValue ?? "base")
        return JSONResponse.make(Self.created(sandbox.id, file: file), status: 200)
    }

    package func setTimeout(_ request: Request, idText: String, tenant: TenantID) async throws -> Response {
        let body = try await E2BJSON.object(request)
        guard body["timeout"] != nil else { throw E2BAPIError.badRequest("timeout is required") }
        let timeout = try Self.timeout(body["timeout"])
        var (_, record) = try await sandbox(idText, tenant: tenant)
        record.expires = Date().addingTimeInterval(Double(timeout))
        try await provisioner.records().save(record)
        return Response(status: .noContent)
    }

    package func kill(idText: String, tenant: TenantID) async throws -> Response {
        let (sandbox, _) = try await sandbox(idText, tenant: tenant)
        try await sandbox.remove()
        // As corral's own DELETE: other replicas count this one's sandboxes from what it published.
        await host.control.sandboxRemoved(tenant)
        return Response(status: .noContent)
    }

    package func detail(idText: String, tenant: TenantID) async throws -> Response {
        let (sandbox, record) = try await sandbox(idText, tenant: tenant)
        let store = try provisioner.records()
        var entry = listed(record: record, file: E2BSandboxFile.read(store, sandbox.id))
        if case .object(var fields) = entry {
            let file = try E2BSandboxFile.readOrMake(store, sandbox.id, template: record.template?.rawValue ?? "base")
            fields["envdAccessToken"] = .string(file.accessToken)
            fields["domain"] = .null
            entry = .object(fields)
        }
        return JSONResponse.make(entry)
    }

    /// `GET /v2/sandboxes` (and the older `GET /sandboxes`): the tenant's running sandboxes,
    /// filtered by metadata (`metadata=k%3Dv%26k2%3Dv2`) and state, oldest first, in pages of
    /// `limit` with the next page's token in `x-next-token`.
    package func list(_ request: Request, tenant: TenantID, paged: Bool) async throws -> Response {
        let query = request.uri.queryParameters
        let wanted = query["metadata"].map { E2BJSON.formDecode(String($0)) } ?? [:]
        if let states = query["state"], !states.split(separator: ",").contains("running") {
            return JSONResponse.make([JSONValue]())
        }
        let store = try provisioner.records()
        let now = Date()
        var rows: [JSONValue] = []
        for info in try await provisioner.list(tenant: tenant) {
            guard let record = try? store.read(info.id), record.tenant == tenant else { continue }
            if let expires = record.expires, expires <= now { continue }
            guard wanted.allSatisfy({ record.labels[$0.key] == $0.value }) else { continue }
            rows.append(listed(record: record, file: E2BSandboxFile.read(store, info.id)))
        }
        // With workers, theirs too, in the order they started (the timestamps sort as text).
        if let elsewhere = await host.control.e2bRowsElsewhere(request, tenant: tenant) {
            rows += elsewhere
            rows.sort { ($0["startedAt"]?.stringValue ?? "") < ($1["startedAt"]?.stringValue ?? "") }
        }
        if query["order"] == "desc" { rows.reverse() }
        var start = 0
        if let token = query["nextToken"], !token.isEmpty {
            guard let offset = Int(token), offset >= 0 else { throw E2BAPIError.badRequest("invalid nextToken") }
            start = min(offset, rows.count)
        }
        var limit = rows.count
        if paged, let text = query["limit"] {
            guard let value = Int(text), value >= 1, value <= 1000 else {
                throw E2BAPIError.badRequest("limit must be from 1 to 1000")
            }
            limit = value
        }
        let end = min(rows.count, start + limit)
        var response = JSONResponse.make(Array(rows[start..<end]))
        if end < rows.count, let name = HTTPField.Name("x-next-token") {
            response.headers[name] = String(end)
        }
        return response
    }

    /// A sandbox as E2B's list and get answer it.
    package func listed(record: SandboxRecord, file: E2BSandboxFile?) -> JSONValue {
        let resources =
            record.template.flatMap { provisioner.configuration.template(named: $0)?.resources }
            ?? SandboxResources()
        // A sandbox without an end runs until removed: E2B always names one.
        let end = record.expires ?? record.bound.addingTimeInterval(Double(Self.maxTimeout) * 365)
        return .object([
            "templateID": .string(file?.templateID ?? record.template?.rawValue ?? "base"),
            "sandboxID": .string(record.id.rawValue), "clientID": .string(Self.clientID),
            "startedAt": .string(E2BJSON.timestamp(record.bound)), "endAt": .string(E2BJSON.timestamp(end)),
            "cpuCount": .int(Int64(max(1, resources.cpus.rounded(.up)))),
            "memoryMB": .int(resources.memory.bytes >> 20), "diskSizeMB": .int(resources.disk.bytes >> 20),
            "state": .string("running"), "envdVersion": .string(Self.envdVersion),
            "metadata": .object(record.labels.mapValues { .string($0) }),
        ])
    }
}

/// Reading E2B's JSON bodies and query strings.
package enum E2BJSON {
    package static func object(_ request: Request, allowEmpty: Bool = false) async throws -> JSONValue {
        let bytes = try await collect(request, limit: 1 << 20)
        if bytes.isEmpty {
            guard allowEmpty else { throw E2BAPIError.badRequest("the request has no body; send a JSON object") }
            return .object([:])
        }
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)), case .object = value else {
            throw E2BAPIError.badRequest("the request body is not a JSON object")
        }
        return value
    }

    package static func stringMap(_ value: JSONValue?, field: String) throws -> [String: String] {
        guard let value, value != .null else { return [:] }
        guard let object = value.objectValue else { throw E2BAPIError.badRequest("\(field) must be an object") }
        var map: [String: String] = [:]
        for (key, item) in object {
            guard let text = item.stringValue else { throw E2BAPIError.badRequest("\(field).\(key) must be a string") }
            map[key] = text
        }
        return map
    }

    /// `a=1&b=2` with percent-escapes, as the SDK sends the metadata filter.
    package static func formDecode(_ text: String) -> [String: String] {
        var map: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ part: Substring) -> String {
                String(part).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(part)
            }
            guard let key = parts.first else { continue }
            map[decode(key)] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return map
    }

    package static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}

/// Headers by name, whatever their case.
package enum E2BHeaders {
    package static func value(_ request: Request, _ name: String) -> String? {
        let lowered = name.lowercased()
        return request.headers.first { $0.name.canonicalName == lowered }?.value
    }
}
