import CorralCore
import CurlHTTP
import Foundation

extension DockerEngineClient {
    /// `GET /images/{name}/json`; nil when the engine has no such image.
    public func inspectImage(_ reference: String) async throws -> ImageInspect? {
        let response = try await call(.get, "/images/\(Self.imageSegment(reference))/json", accept: [404])
        if response.status == 404 { return nil }
        return try decode(ImageInspect.self, from: response, path: "/images/\(reference)/json")
    }

    /// `POST /images/create?fromSrc=-`: imports a root filesystem tar as `repository:tag`.
    /// `changes` are Dockerfile instructions applied to the image (`USER 1000:1000`,
    /// `LABEL k=v`, `WORKDIR /workspace`). Returns the image id.
    @discardableResult
    public func importImage(
        rootfs: HTTPRequestBody, repository: String, tag: String, changes: [String] = []
    ) async throws -> String {
        var query: [(String, String?)] = [("fromSrc", "-"), ("repo", repository), ("tag", tag)]
        for change in changes { query.append(("changes", change)) }
        let path = try await self.path("/images/create", query: query)
        let request = HTTPRequest(.post, path, headers: ["Content-Type": "application/x-tar"], body: rootfs)
        let response = try await streaming(request, describedAs: "/images/create") { head, body in
            HTTPResponse(head: head, body: try await body.collect(upTo: 16 << 20))
        }
        // The engine reports failures inside a 200 stream of JSON progress messages.
        var imageID = ""
        for line in response.bodyText.split(separator: "\n") {
            guard let object = try? JSONDecoder().decode(JSONValue.self, from: Data(line.utf8)) else { continue }
            if let message = object["errorDetail"]?["message"]?.stringValue ?? object["error"]?.stringValue {
                throw CorralError(.engine, "the engine could not import \(repository):\(tag): \(message)")
            }
            if let status = object["status"]?.stringValue, status.hasPrefix("sha256:") { imageID = status }
        }
        return imageID
    }

    /// `DELETE /images/{name}`.
    public func removeImage(_ reference: String, force: Bool = false) async throws {
        try await call(.delete, "/images/\(Self.imageSegment(reference))", query: [("force", "\(force)")])
    }

    /// Image references keep their `/` and `:` (the engine routes `/images/{name:.*}`); every
    /// other reserved character is encoded.
    static func imageSegment(_ reference: String) -> String {
        reference.split(separator: "/", omittingEmptySubsequences: false).map { part in
            part.split(separator: ":", omittingEmptySubsequences: false).map { percentEncode(String($0)) }
                .joined(separator: ":")
        }.joined(separator: "/")
    }
}
