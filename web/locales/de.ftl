# Die Texte des Webportals auf Deutsch. Dieselben Nachrichten-IDs und Variablen wie
# en.ftl (von den Tests geprüft).

## Überall

site-name = NOC
nav-account = Konto
nav-devices = Geräte
nav-settings = Einstellungen
nav-sign-out = Abmelden
field-login = E-Mail-Adresse oder Mobilnummer
field-email = E-Mail-Adresse
field-password = Passwort
field-current-password = Aktuelles Passwort
field-new-password = Neues Passwort
field-new-password-again = Neues Passwort wiederholen
field-msisdn = Mobilnummer
field-time-zone = Zeitzone
cancel = Abbrechen
home-link = Startseite
too-many-attempts = Zu viele Versuche. Bitte warten Sie { $seconds } { $seconds ->
    [one] Sekunde
   *[other] Sekunden
}, bevor Sie es erneut versuchen.
form-fill-all = Bitte füllen Sie alle Felder aus.
form-too-long = Ein Feld ist länger, als dieses Formular annimmt.
form-time-zone = Wählen Sie Ihre Zeitzone aus der Liste.
form-passwords-differ = Die beiden neuen Passwörter stimmen nicht überein.
form-new-password-missing = Geben Sie ein neues Passwort ein.

## Was die Kontoregeln ablehnen

problem-password-length = Das Passwort muss { $min } bis { $max } Zeichen lang sein.
problem-password-reused = Wählen Sie ein anderes Passwort als das aus der Willkommens-E-Mail.
problem-email = Geben Sie eine E-Mail-Adresse ein.
problem-contact-email = Die Kontaktadresse muss eine E-Mail-Adresse sein.
problem-msisdn = Eine Mobilnummer hat 5 bis 20 Ziffern, wahlweise nach einem +.
problem-time-zone = Wählen Sie Ihre Zeitzone aus der Liste.
problem-locale = Wählen Sie eine Sprache aus der Liste.
problem-calendar-days = Die Kalendertage auf Ihren Geräten müssen eine Zahl von 1 bis 365 sein.
problem-first-name = Der Vorname darf höchstens 100 druckbare Zeichen haben.
problem-last-name = Der Nachname darf höchstens 100 druckbare Zeichen haben.
problem-device-name = Ein Gerätename hat 1 bis 64 druckbare Zeichen.
problem-too-many-rules = Höchstens { $max } Benachrichtigungsregeln.
problem-rule-field = Eine Benachrichtigungsregel prüft Von, An oder Betreff.
problem-rule-text = Der Text einer Benachrichtigungsregel muss 1 bis { $max } druckbare Zeichen haben.
problem-question-not-offered = Die Wiederherstellung per Sicherheitsfrage wird für dieses Konto nicht angeboten.
problem-question-unknown = Wählen Sie eine der angebotenen Fragen.
problem-answer-length = Die Antwort muss { $min } bis { $max } Zeichen lang sein.
problem-other = Das Formular wurde abgelehnt. Prüfen Sie Ihre Eingaben.

## Fehlerseiten

error-forbidden-title = Anfrage abgelehnt
error-forbidden = Dieses Formular ist abgelaufen oder stammt nicht von dieser Website. Gehen Sie zurück, laden Sie die Seite neu und versuchen Sie es erneut.
error-bad-form-title = Formular nicht verstanden
error-bad-form = Das Formular konnte nicht gelesen werden. Laden Sie die Seite neu und versuchen Sie es erneut.
error-too-large-title = Formular zu groß
error-too-large = Das Formular ist größer, als diese Website annimmt.
error-not-found-title = Nicht gefunden
error-not-found = Unter dieser Adresse gibt es nichts.
error-busy-title = Ausgelastet
error-busy = Der Dienst ist ausgelastet. Bitte versuchen Sie es in einigen Sekunden erneut.
error-unavailable-title = Vorübergehend nicht verfügbar
error-unavailable = Der Dienst ist vorübergehend nicht verfügbar. Bitte versuchen Sie es gleich noch einmal.
error-internal-title = Etwas ist schiefgegangen
error-internal = Bei uns ist etwas schiefgegangen. Bitte versuchen Sie es erneut.
session-ended-title = Ihre Sitzung ist abgelaufen
session-ended = Sie wurden nach einer Zeit ohne Aktivität abgemeldet oder anderswo abgemeldet. Melden Sie sich erneut an, um fortzufahren.

## Anmelden und Abmelden

signin-title = Anmelden
signin-keep = Auf diesem Gerät angemeldet bleiben
signin-submit = Anmelden
signin-forgot = Passwort vergessen?
signin-missing = Geben Sie Ihre E-Mail-Adresse oder Mobilnummer und Ihr Passwort ein.
signin-wrong = Die Anmeldedaten sind nicht korrekt.
signin-suspended = Dieses Konto kann sich derzeit nicht anmelden. Wenden Sie sich an Ihre Administration.
signin-signed-out = Sie sind abgemeldet.
signin-recovered = Ihr Passwort ist geändert. Melden Sie sich damit an.
signed-out-title = Abgemeldet
signed-out-heading = Sie sind abgemeldet
signed-out-again = Erneut anmelden

## Aktivierung

activate-title = Konto aktivieren
activate-intro = Verwenden Sie die E-Mail-Adresse und das Passwort aus Ihrer Willkommens-E-Mail, nennen Sie uns Ihre Mobilnummer und Zeitzone und wählen Sie Ihr eigenes Passwort.
activate-mailed-password = Passwort aus der Willkommens-E-Mail
activate-new-password = Ihr neues Passwort
activate-new-password-again = Ihr neues Passwort wiederholen
activate-submit = Aktivieren
activate-wrong = E-Mail-Adresse und Passwort stimmen nicht mit denen der Willkommens-E-Mail überein.
activate-msisdn-not-approved = Ihr Netzbetreiber hat diese Mobilnummer noch nicht für den Dienst freigegeben. Fragen Sie Ihre Administration.
activate-msisdn-taken = Diese Mobilnummer gehört zu einem anderen Konto.
activate-suspended = Dieses Konto kann derzeit nicht aktiviert werden. Wenden Sie sich an Ihre Administration.

## Die Kontoseite

home-title = Ihr Konto
home-msisdn-none = noch nicht aktiviert
home-time-zone-none = nicht festgelegt
home-activated = Ihr Konto ist aktiv. Willkommen!
home-sessions = Wo Sie angemeldet sind
home-this-browser = dieser Browser
home-kept = bleibt angemeldet
home-session-when = angemeldet { $signed_in }, zuletzt aktiv { $last_seen }
home-sign-out-here = Hier abmelden
home-sign-out-there = Dort abmelden
home-unknown-browser = Unbekannter Browser
sessions-hint = Jeder Browser, mit dem Sie angemeldet sind, auch die mit „angemeldet bleiben“. Beenden Sie alle, die Sie nicht kennen.

## Geräte

devices-title = Ihre Geräte
devices-none = Für Ihr Konto ist kein Gerät aktiviert. Aktivieren Sie eines mit Ihrer Mobilnummer und Ihrem Passwort in der App des Geräts.
devices-unnamed = Unbenanntes Gerät ({ $type })
devices-default-type = Gerät
devices-erased = gelöscht
devices-erased-when = { $type }: hat bestätigt, seine Daten und Zugangsdaten gelöscht zu haben, { $when }
devices-erase-pending = Löschung ausstehend
devices-erase-pending-when = { $type }: Löschung angefordert { $when }; sie erfolgt, sobald sich das Gerät wieder verbindet
devices-connected = verbunden ({ $node })
devices-not-connected = nicht verbunden
devices-last-seen = zuletzt gesehen { $when }
devices-never-seen = noch nie verbunden
devices-activated = { $type }, aktiviert { $when }
devices-name-label = Gerätename
devices-rename = Umbenennen
devices-sign-out = Dieses Gerät abmelden
devices-erase-link = Dieses Gerät löschen…
devices-renamed = Das Gerät ist umbenannt.
devices-revoked = Das Gerät ist abgemeldet. Es muss erneut aktiviert werden, um es zu nutzen.
devices-wipe-asked = Das Gerät funktioniert nicht mehr. Es löscht seine Daten und Zugangsdaten, sobald es sich verbindet, sofort, wenn es gerade verbunden ist.
wipe-title = Ein Gerät löschen
wipe-heading = { $device } löschen?
wipe-intro = Verwenden Sie dies, wenn das Gerät verloren oder gestohlen ist. Es funktioniert sofort nicht mehr. Sobald es sich wieder mit dem Dienst verbindet (sofort, wenn es gerade verbunden ist), löscht es die gespeicherten E-Mails, Termine und Kontakte sowie seine Zugangsdaten und bestätigt dies hier.
wipe-final = Dies lässt sich nicht rückgängig machen: Um das Gerät wieder zu nutzen, aktivieren Sie es neu.
wipe-confirm = Mir ist bewusst, dass { $device } gelöscht wird
wipe-submit = Gerät löschen
wipe-unticked = Setzen Sie das Häkchen, um zu bestätigen, dass dieses Gerät gelöscht werden soll.

## Einstellungen

settings-title = Einstellungen
settings-first-name = Vorname
settings-last-name = Nachname
settings-contact-email = Kontakt-E-Mail-Adresse
settings-contact-email-hint = Wohin E-Mails dieses Dienstes gehen, etwa Links zur Passwort-Wiederherstellung; leer: { $email }.
settings-language = Sprache
settings-language-browser = Wie mein Browser es bevorzugt
settings-constant-sync = ConstantSync: neue E-Mails sofort an meine Geräte senden
settings-calendar-days = Kalendertage auf meinen Geräten
settings-calendar-days-hint = Kalendereinträge von heute bis so viele Tage im Voraus (1 bis 365) werden an Ihre Geräte gesendet.
settings-alerts = Benachrichtigungen über neue E-Mails
settings-alerts-on = Mich über neue E-Mails benachrichtigen, die einer Regel entsprechen
settings-alerts-hint = Eine neue E-Mail löst eine Benachrichtigung aus, wenn sie einer dieser Regeln entspricht (der Text wird in der Kopfzeile gesucht, ohne Beachtung der Groß- und Kleinschreibung). Leeren Sie eine Zeile, um ihre Regel zu entfernen.
settings-rule-header = Kopfzeile
settings-rule-contains = enthält
settings-rule-from = Von
settings-rule-to = An
settings-rule-subject = Betreff
settings-save = Einstellungen speichern
settings-saved = Ihre Einstellungen sind gespeichert.
settings-password = Passwort ändern
settings-sign-out-devices = Auch meine Geräte abmelden (sie müssen erneut aktiviert werden)
settings-password-submit = Passwort ändern
settings-password-changed = Ihr Passwort ist geändert. Überall sonst sind Sie abgemeldet.
settings-password-missing = Geben Sie Ihr aktuelles und ein neues Passwort ein.
settings-password-wrong = Ihr aktuelles Passwort ist nicht korrekt.
settings-question = Sicherheitsfrage
settings-question-yours = Ihre Frage: { $question }
settings-question-none = Sie haben keine Sicherheitsfrage.
settings-question-hint = Damit können Sie ein vergessenes Passwort zurücksetzen, indem Sie sie beantworten. Sie ist schwächer als der zugesandte Link: Wählen Sie eine Antwort, die andere nicht herausfinden können.
settings-question-change = Ändern oder entfernen
settings-question-choose = Eine Frage wählen
settings-question-saved = Ihre Sicherheitsfrage ist gespeichert.
settings-question-removed = Ihre Sicherheitsfrage ist entfernt.

## Die Sicherheitsfrage

question-first-school = Wie hieß Ihre erste Schule?
question-first-pet = Wie hieß Ihr erstes Haustier?
question-birth-city = In welcher Stadt wurden Sie geboren?
question-childhood-friend = Wie lautet der Vorname Ihrer besten Freundin oder Ihres besten Freundes aus Kindertagen?
question-first-street = In welcher Straße haben Sie als Kind gewohnt?
question-page-title = Sicherheitsfrage
question-page-intro = Wenn Sie Ihr Passwort vergessen, können Sie es zurücksetzen, indem Sie diese Frage beantworten. Wählen Sie eine Antwort, die nur Sie kennen: nichts, was andere herausfinden oder erraten können. Groß- und Kleinschreibung spielen keine Rolle.
question-label = Frage
answer-label = Antwort
question-save = Speichern
question-remove = Meine Sicherheitsfrage entfernen
question-missing = Geben Sie eine Antwort und Ihr aktuelles Passwort ein.

## E-Mails des Dienstes (reiner Text)

mail-recovery-subject = Passwort zurücksetzen
mail-recovery-body =
    Hallo { $name },

    jemand, wahrscheinlich Sie, hat das Zurücksetzen des Passworts Ihres Kontos angefordert.
    Um ein neues zu wählen, öffnen Sie diesen Link innerhalb von { $minutes } Minuten:

    {"    "}{ $link }

    Der Link funktioniert einmal. Wenn Sie ihn nicht angefordert haben, ignorieren Sie diese
    E-Mail: Ihr Passwort bleibt, wie es ist.

mail-alert-confirm-subject = Bestätigen Sie Ihre Benachrichtigungsadresse
mail-alert-confirm-body =
    Hallo { $name },

    jemand, wahrscheinlich Sie, möchte Benachrichtigungen über neue E-Mails an diese Adresse erhalten.
    Zum Bestätigen öffnen Sie diesen Link innerhalb von 24 Stunden und drücken die Schaltfläche:

    {"    "}{ $link }

    Wenn Sie das nicht angefordert haben, ignorieren Sie diese E-Mail: Hierher kommt keine Benachrichtigung.

## Bestätigung der Benachrichtigungsadresse

alert-confirm-title = Benachrichtigungsadresse bestätigen
alert-confirm-intro = Drücken Sie die Schaltfläche, um Benachrichtigungen über neue E-Mails an diese Adresse zu erhalten.
alert-confirm-submit = Bestätigen
alert-confirm-done-title = Benachrichtigungsadresse bestätigt
alert-confirm-done = Benachrichtigungen über neue E-Mails gehen jetzt an { $address }.
alert-confirm-invalid-title = Link ungültig
alert-confirm-invalid = Dieser Bestätigungslink ist unbekannt, wurde durch einen neueren ersetzt oder ist älter als 24 Stunden. Geben Sie die Adresse auf der Benachrichtigungsseite erneut ein, um einen neuen Link zu erhalten.

## Passwort-Wiederherstellung

recover-title = Passwort zurücksetzen
recover-intro = Geben Sie die E-Mail-Adresse oder Mobilnummer Ihres Kontos ein. Wir senden einen Link an dessen Kontaktadresse.
recover-send = Link senden
recover-by-question = Stattdessen Ihre Sicherheitsfrage beantworten
recover-by-question-where = (wo Ihre Organisation dies anbietet und Sie in Ihren Einstellungen eine Frage gewählt haben).
recover-no-way = Wenn nichts davon funktioniert, bitten Sie Ihre Administration, Ihr Passwort zurückzusetzen.
recover-login-missing = Geben Sie Ihre E-Mail-Adresse oder Mobilnummer ein.
recover-sent-title = Sehen Sie in Ihr Postfach
recover-sent = Wenn es ein Konto mit dieser Adresse oder Nummer gibt, haben wir einen Link an seine Kontaktadresse gesendet. Der Link funktioniert einmal, innerhalb von 15 Minuten.
recover-back = Zurück zur Anmeldung
recover-question-title = Ihre Sicherheitsfrage beantworten
recover-question-intro = Wählen Sie die Frage, die Sie in Ihren Einstellungen gewählt haben, und beantworten Sie sie. Groß- und Kleinschreibung spielen keine Rolle.
recover-question-yours = Ihre Frage
recover-answer-yours = Ihre Antwort
recover-continue = Weiter
recover-other-ways = Andere Wege, Ihr Passwort zurückzusetzen
recover-question-missing = Geben Sie Ihre E-Mail-Adresse oder Mobilnummer ein, wählen Sie Ihre Frage und beantworten Sie sie.
recover-question-wrong = Diese Angaben passen zu keinem Konto, das sich auf diesem Weg wiederherstellen lässt. Prüfen Sie Frage und Antwort, oder nutzen Sie einen anderen Weg.
reset-title = Ein neues Passwort wählen
reset-submit = Passwort festlegen
reset-invalid-title = Dieser Link kann nicht verwendet werden
reset-invalid = Der Link ist abgelaufen oder wurde bereits verwendet. Fordern Sie einen neuen an.

## Zugriff im Browser: Mail, Kalender und Kontakte vom Unternehmensserver

nav-mail = Mail
nav-calendar = Kalender
nav-contacts = Kontakte
page-newer = Neuere
page-older = Ältere
page-position = { $first }–{ $last } von { $total }
mail-folders = Ordner
mail-inbox = Posteingang
mail-compose = Neue Nachricht
mail-empty = Keine Nachrichten in diesem Ordner.
mail-from = Von
mail-to = An
mail-cc = Kopie
mail-subject = Betreff
mail-date = Datum
mail-size = Größe
mail-text = Nachricht
mail-has-attachments = Anhang
mail-no-sender = (kein Absender)
mail-no-subject = (kein Betreff)
mail-no-text = Diese Nachricht hat keinen Text zum Anzeigen.
mail-attachments = Anhänge
mail-back-to = Zurück zu { $folder }
mail-reply = Antworten
mail-forward = Weiterleiten
mail-delete = Löschen
mail-move = Verschieben
mail-move-to = Verschieben nach
mail-send = Senden
mail-sent = Die Nachricht wurde gesendet.
mail-deleted = Die Nachricht wurde gelöscht.
mail-moved = Die Nachricht wurde verschoben.
mail-no-recipient = Geben Sie mindestens einen Empfänger ein.
mail-send-refused = Die Nachricht wurde nicht gesendet: { $reason }
mail-quote-intro = Am { $when } schrieb { $from }:
mail-forwarded = ---------- Weitergeleitete Nachricht ----------
mail-forward-attachments = Die Anhänge werden mitgesendet: { $names }
calendar-title = Kalender
calendar-week-of = Woche ab { $day }
calendar-all-day = Ganztägig
calendar-no-title = (ohne Titel)
calendar-nothing = Nichts geplant.
calendar-today = Heute
calendar-previous-day = Vorheriger Tag
calendar-next-day = Nächster Tag
calendar-previous-week = Vorherige Woche
calendar-next-week = Nächste Woche
calendar-day-view = Tag
calendar-week-view = Woche
calendar-monday = Montag
calendar-tuesday = Dienstag
calendar-wednesday = Mittwoch
calendar-thursday = Donnerstag
calendar-friday = Freitag
calendar-saturday = Samstag
calendar-sunday = Sonntag
contacts-title = Kontakte
contacts-search = Suchen
contacts-none = Keine Kontakte gefunden.
contacts-no-name = (ohne Namen)
contacts-add = Kontakt hinzufügen
contacts-name = Name
contacts-phone = Telefon
contacts-organization = Organisation
contacts-back = Zurück zu den Kontakten
contacts-name-needed = Geben Sie einen Namen ein.
contacts-refused = Der Kontakt wurde nicht hinzugefügt: { $reason }
browse-not-allowed-title = Nicht verfügbar
browse-not-allowed = Der Zugriff auf Mail, Kalender und Kontakte von dieser Art Browser ist für Ihr Konto nicht freigeschaltet. Wenden Sie sich an Ihre Administration.
browse-offline-title = Unternehmensserver nicht verbunden
browse-offline = Ihr Unternehmensserver ist gerade nicht mit dem Dienst verbunden. Versuchen Sie es in einigen Minuten erneut.
browse-unsupported-title = Nicht angeboten
browse-unsupported = Ihr Unternehmensserver bietet keinen Zugriff auf Ihre Mail im Browser an.
browse-timeout-title = Keine Antwort
browse-timeout = Ihr Unternehmensserver hat nicht rechtzeitig geantwortet. Versuchen Sie es erneut; wenn das wieder geschieht, informieren Sie Ihre Administration.
browse-busy = Ihr Unternehmensserver ist ausgelastet. Versuchen Sie es gleich noch einmal.
browse-not-found = Diese Nachricht, dieser Ordner oder Kontakt existiert nicht (mehr).
browse-refused-title = Nicht ausgeführt
browse-refused = Ihr Unternehmensserver hat diese Anfrage abgelehnt.
browse-source-title = Postfach nicht verfügbar
browse-source = Ihr Unternehmensserver konnte Ihr Postfach, Ihren Kalender oder Ihre Kontakte gerade nicht lesen. Versuchen Sie es später erneut.
browse-too-large-title = Zu groß für die Anzeige
browse-too-large = Diese Nachricht oder dieser Anhang ist zu groß, um hier angezeigt zu werden. Öffnen Sie sie in Ihrem gewohnten E-Mail-Programm.
browse-internal-title = Unerwartete Antwort
browse-internal = Die Antwort Ihres Unternehmensservers konnte nicht angezeigt werden.
contacts-count = { $n ->
    [one] Ein Kontakt
   *[other] { $n } Kontakte
}
pda-pc-version = PC-Version
pda-previous = Zurück
pda-next = Weiter
pda-back = Zurück

## Wohin Benachrichtigungen gehen

alerts-title = Benachrichtigungen
alerts-intro = Wenn eine neue Mail zu einer Ihrer Regeln passt (auf der Seite Einstellungen), werden Sie hier benachrichtigt. Solange kein Ziel angegeben ist, wird nichts gesendet.
alerts-email = Benachrichtigungen an diese E-Mail-Adresse senden
alerts-webhook = Benachrichtigungen an diese HTTPS-Adresse senden (Webhook)
alerts-webhook-key = Jede Sendung ist mit diesem Schlüssel signiert (HMAC-SHA256, Kopfzeile X-Noc-Signature):
alerts-new-key = Neuen Schlüssel erzeugen
alerts-excerpt = Die ersten Worte der Mail mitsenden
alerts-quiet = Ruhezeit (keine Benachrichtigungen), in Ihrer Zeitzone
alerts-quiet-from = Von
alerts-quiet-to = Bis
alerts-quiet-none = —
alerts-save = Speichern
alerts-saved = Ihre Benachrichtigungsziele sind gespeichert.
alerts-confirm-sent = Ihre Benachrichtigungsziele sind gespeichert. Wir haben einen Bestätigungslink an { $address } gesendet; Benachrichtigungen gehen dorthin, sobald Sie ihm folgen.
alerts-pending = Wartet auf Bestätigung: { $address } (siehe den Link, den wir dorthin gesendet haben).
alerts-pending-current = Bis dahin gehen Benachrichtigungen an { $address }.
alerts-mail-unavailable = Dieser Dienst versendet keine E-Mails, daher können Benachrichtigungen hier nicht an eine E-Mail-Adresse gehen.
alerts-rules-link = Welche Mail benachrichtigt: die Regeln auf der Seite Einstellungen
nav-alerts = Benachrichtigungen
problem-alert-email = Benachrichtigungen gehen an eine E-Mail-Adresse.
problem-alert-email-rationed = Höchstens { $max } Bestätigungs-E-Mails pro Tag: Versuchen Sie es morgen erneut.
problem-webhook-url = Ein Webhook ist eine https://-Adresse.
problem-quiet-hours = Wählen Sie beide Stunden der Ruhezeit oder keine.
alerts-sms = Benachrichtigungen per SMS an meine Mobilnummer senden
alerts-wap-push = Benachrichtigungen als WAP-Push an meine Mobilnummer senden (öffnet den WAP-Posteingang)
