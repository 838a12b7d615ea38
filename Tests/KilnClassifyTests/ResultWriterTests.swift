import Foundation
import Testing
import KilnFormat
import KilnImage
import KilnClassify

@Suite struct ResultWriterTests {
    static let awkward = ["say \"hi\", ok", "two\nlines", "crlf\r\nend", "tab\there", "back\\slash", "a/b", "naïve café 猫 😀",
                          "\u{1}\u{8}\u{c}\u{1f}", "q\"\u{301}", ""]

    /// JSON Lines: the layout below, byte for byte; every awkward label and path reads back unchanged.
    @Test func jsonLines() throws {
        let w = ResultWriter(format: .json, scores: .probabilities)
        #expect(w.header() == nil)
        let line = w.lines(file: "photos/a.jpg", .success([Prediction(index: 2, label: "cat", score: 0.75), Prediction(index: 0, label: "dog", score: 1e-05)]))
        #expect(line == [#"{"file":"photos/a.jpg","predictions":[{"rank":1,"index":2,"label":"cat","probability":0.75},{"rank":2,"index":0,"label":"dog","probability":1e-05}]}"#])
        let scores = ResultWriter(format: .json, scores: .scores)
        #expect(scores.lines(file: "x", .success([Prediction(index: 0, label: "a", score: -3.5), Prediction(index: 1, label: "b", score: .nan)])) ==
                [#"{"file":"x","predictions":[{"rank":1,"index":0,"label":"a","score":-3.5},{"rank":2,"index":1,"label":"b","score":null}]}"#])
        let error = ClassifyError(.badInput, file: "b.png", "PNG data ends early", imageKind: .truncated)
        #expect(w.lines(file: "b.png", .failure(error)) == [#"{"file":"b.png","error":{"kind":"truncated","message":"PNG data ends early"}}"#])
        #expect(w.lines(file: "c", .failure(ClassifyError(.badInput, file: "c", "cannot open: x"))) ==
                [#"{"file":"c","error":{"kind":"error","message":"cannot open: x"}}"#])

        struct P: Decodable { var label: String; var probability: Float }
        struct L: Decodable { var file: String; var predictions: [P]? }
        for label in Self.awkward {
            let lines = w.lines(file: label + ".jpg", .success([Prediction(index: 0, label: label, score: 0.5)]))
            #expect(lines.count == 1 && !lines[0].contains("\n") && !lines[0].contains("\r"), "\(lines)")
            let back = try JSONDecoder().decode(L.self, from: Data(lines[0].utf8))
            #expect(back.file == label + ".jpg" && back.predictions?.first?.label == label)
        }
        #expect(w.lines(file: "t", .success([Prediction(index: 0, label: "a\"b\\c\n", score: 1)])) ==
                [#"{"file":"t","predictions":[{"rank":1,"index":0,"label":"a\"b\\c\n","probability":1.0}]}"#])
    }

    /// RFC 4180: a field with a comma, quote, CR or LF is quoted with its quotes doubled; the rest as is.
    @Test func csv() throws {
        let w = ResultWriter(format: .csv, scores: .probabilities)
        #expect(w.header() == "file,rank,index,label,probability,error")
        #expect(ResultWriter(format: .csv, scores: .scores).header() == "file,rank,index,label,score,error")
        let rows = w.lines(file: "a,b.jpg", .success([Prediction(index: 1, label: "say \"hi\", ok", score: 0.5),
                                                      Prediction(index: 0, label: "naïve 猫", score: 0.25)]))
        #expect(rows == [#""a,b.jpg",1,1,"say ""hi"", ok",0.5,"#, #""a,b.jpg",2,0,naïve 猫,0.25,"#])
        #expect(w.lines(file: "x", .success([Prediction(index: 0, label: "crlf\r\nend", score: 1)])) == ["x,1,0,\"crlf\r\nend\",1.0,"])
        #expect(w.lines(file: "x", .success([Prediction(index: 0, label: "q\"\u{301}", score: 1)])) == ["x,1,0,\"q\"\"\u{301}\",1.0,"])
        #expect(w.lines(file: "b.png", .failure(ClassifyError(.badInput, file: "b.png", "bad \"data\", here"))) ==
                [#"b.png,,,,,"bad ""data"", here""#])
        for label in Self.awkward {
            let line = try #require(w.lines(file: "f", .success([Prediction(index: 0, label: label, score: 1)])).first)
            #expect(parseCSVRecord(line) == ["f", "1", "0", label, "1.0", ""], "\(label.debugDescription)")
        }
    }

    /// The table: FILE padded to the longest path, RANK, PROB as a percentage (SCORE as Float text), CLASS.
    @Test func textTable() {
        let w = ResultWriter(format: .text, scores: .probabilities, fileWidth: 9)
        #expect(w.header() == "FILE       RANK      PROB  CLASS")
        #expect(w.lines(file: "a.jpg", .success([Prediction(index: 2, label: "cat", score: 0.5), Prediction(index: 0, label: "dog", score: 0.05)])) ==
                ["a.jpg      1       50.00%  cat", "           2        5.00%  dog"])
        #expect(w.lines(file: "long/b.png", .failure(ClassifyError(.badInput, file: "long/b.png", "empty file (0 bytes)"))) ==
                ["long/b.png  error: empty file (0 bytes)"])
        let s = ResultWriter(format: .text, scores: .scores, fileWidth: 1)
        #expect(s.header() == "FILE  RANK     SCORE  CLASS")
        #expect(s.lines(file: "a", .success([Prediction(index: 0, label: "x", score: -12.5)])) == ["a  1        -12.5  x"])
    }
}

/// One RFC 4180 record (quotes doubled inside quoted fields), by Unicode scalars.
func parseCSVRecord(_ line: String) -> [String] {
    var fields: [String] = [], field = String.UnicodeScalarView(), quoted = false, scalars = Array(line.unicodeScalars), i = 0
    while i < scalars.count {
        let u = scalars[i]
        if quoted {
            if u == "\"" {
                if i + 1 < scalars.count, scalars[i + 1] == "\"" { field.append(u); i += 1 } else { quoted = false }
            } else {
                field.append(u)
            }
        } else if u == "\"" {
            quoted = true
        } else if u == "," {
            fields.append(String(field))
            field = String.UnicodeScalarView()
        } else {
            field.append(u)
        }
        i += 1
    }
    fields.append(String(field))
    return fields
}
