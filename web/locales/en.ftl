# The web portal's texts in English. Every page text comes from here (web/src/i18n.rs).
# Each other language has a file beside this one with the same message ids and the same
# variables (checked by the tests).

## Everywhere

site-name = NOC
nav-account = Account
nav-devices = Devices
nav-settings = Settings
nav-sign-out = Sign out
field-login = E-mail address or mobile number
field-email = E-mail address
field-password = Password
field-current-password = Current password
field-new-password = New password
field-new-password-again = New password again
field-msisdn = Mobile number
field-time-zone = Time zone
cancel = Cancel
home-link = Home
too-many-attempts = Too many attempts. Please wait { $seconds } { $seconds ->
    [one] second
   *[other] seconds
} before trying again.
form-fill-all = Fill in every field.
form-too-long = A field is longer than this form accepts.
form-time-zone = Choose your time zone from the list.
form-passwords-differ = The two new passwords differ.
form-new-password-missing = Enter a new password.

## What the account rules refuse

problem-password-length = Password must be { $min } to { $max } characters.
problem-password-reused = Choose a password other than the one in the welcome mail.
problem-email = Enter an e-mail address.
problem-contact-email = The contact address must be an e-mail address.
problem-msisdn = A mobile number is 5 to 20 digits, optionally after a +.
problem-time-zone = Choose your time zone from the list.
problem-locale = Choose a language from the list.
problem-calendar-days = Calendar days on your devices must be a number from 1 to 365.
problem-first-name = The first name can be at most 100 printable characters.
problem-last-name = The last name can be at most 100 printable characters.
problem-device-name = A device name is 1 to 64 printable characters.
problem-too-many-rules = At most { $max } alert rules.
problem-rule-field = An alert rule looks at From, To or Subject.
problem-rule-text = The text of an alert rule must be 1 to { $max } printable characters.
problem-question-not-offered = Secret-question recovery is not offered for this account.
problem-question-unknown = Choose one of the questions offered.
problem-answer-length = The answer must be { $min } to { $max } characters long.
problem-other = The form was refused. Check what you entered.

## Pages for errors

error-forbidden-title = Request refused
error-forbidden = This form has expired or did not come from this site. Go back, reload the page and try again.
error-bad-form-title = Form not understood
error-bad-form = The form could not be read. Reload the page and try again.
error-too-large-title = Form too large
error-too-large = The form is larger than this site accepts.
error-not-found-title = Not found
error-not-found = There is nothing at this address.
error-busy-title = Busy
error-busy = The service is busy. Please try again in a few seconds.
error-unavailable-title = Temporarily unavailable
error-unavailable = The service is temporarily unavailable. Please try again shortly.
error-internal-title = Something went wrong
error-internal = Something went wrong on our side. Please try again.
session-ended-title = Your session timed out
session-ended = You were signed out after a period without activity, or signed out elsewhere. Sign in again to go on.

## Sign-in and sign-out

signin-title = Sign in
signin-keep = Keep me signed in on this device
signin-submit = Sign in
signin-forgot = Forgot your password?
signin-missing = Enter your e-mail address or mobile number, and your password.
signin-wrong = The sign-in details are not correct.
signin-suspended = This account cannot sign in at the moment. Contact your administrator.
signin-signed-out = You are signed out.
signin-recovered = Your password is changed. Sign in with it.
signed-out-title = Signed out
signed-out-heading = You are signed out
signed-out-again = Sign in again

## Activation

activate-title = Activate your account
activate-intro = Use the e-mail address and password from your welcome mail, tell us your mobile number and time zone, and choose your own password.
activate-mailed-password = Password from the welcome mail
activate-new-password = Your new password
activate-new-password-again = Your new password again
activate-submit = Activate
activate-wrong = The e-mail address and password do not match those of the welcome mail.
activate-msisdn-not-approved = Your carrier has not approved this mobile number for the service yet. Ask your administrator.
activate-msisdn-taken = This mobile number belongs to another account.
activate-suspended = This account cannot be activated at the moment. Contact your administrator.

## The account page

home-title = Your account
home-msisdn-none = not activated yet
home-time-zone-none = not set
home-activated = Your account is active. Welcome!
home-sessions = Where you are signed in
home-this-browser = this browser
home-kept = kept signed in
home-session-when = signed in { $signed_in }, last active { $last_seen }
home-sign-out-here = Sign out here
home-sign-out-there = Sign out there
home-unknown-browser = Unknown browser
sessions-hint = Each browser you signed in with, "keep me signed in" ones included. End any you do not recognise.

## Devices

devices-title = Your devices
devices-none = No device is activated for your account. Activate one with your mobile number and password in the device's app.
devices-unnamed = Unnamed { $type }
devices-default-type = device
devices-erased = erased
devices-erased-when = { $type }: confirmed it erased its data and credentials { $when }
devices-erase-pending = erase pending
devices-erase-pending-when = { $type }: erase asked { $when }; it happens when the device next connects
devices-connected = connected ({ $node })
devices-not-connected = not connected
devices-last-seen = last seen { $when }
devices-never-seen = never connected
devices-activated = { $type }, activated { $when }
devices-name-label = Device name
devices-rename = Rename
devices-sign-out = Sign this device out
devices-erase-link = Erase this device…
devices-renamed = The device is renamed.
devices-revoked = The device is signed out. It must be activated again to be used.
devices-wipe-asked = The device no longer works. It erases its data and credentials as soon as it connects, at once if it is connected now.
wipe-title = Erase a device
wipe-heading = Erase { $device }?
wipe-intro = Use this when the device is lost or stolen. It stops working at once. When it next connects to the service (at once if it is connected now), it deletes the mail, calendar and contacts it holds and its credentials, and confirms it here.
wipe-final = This cannot be undone: to use the device again, activate it anew.
wipe-confirm = I understand that { $device } will be erased
wipe-submit = Erase the device
wipe-unticked = Tick the box to confirm that this device is to be erased.

## Settings

settings-title = Settings
settings-first-name = First name
settings-last-name = Last name
settings-contact-email = Contact e-mail address
settings-contact-email-hint = Where mail from this service goes, such as password recovery links; empty: { $email }.
settings-language = Language
settings-language-browser = As my browser prefers
settings-constant-sync = ConstantSync: push new mail to my devices as it arrives
settings-calendar-days = Calendar days on my devices
settings-calendar-days-hint = Calendar entries from today up to this many days ahead (1 to 365) are sent to your devices.
settings-alerts = New-mail alerts
settings-alerts-on = Alert me to new mail that matches a rule
settings-alerts-hint = A new mail makes an alert when it matches one of these rules (the text is looked for in the header, ignoring case). Clear a row to remove its rule.
settings-rule-header = Header
settings-rule-contains = contains
settings-rule-from = From
settings-rule-to = To
settings-rule-subject = Subject
settings-save = Save settings
settings-saved = Your settings are saved.
settings-password = Change your password
settings-sign-out-devices = Also sign out my devices (they must be activated again)
settings-password-submit = Change password
settings-password-changed = Your password is changed. You are signed out everywhere else.
settings-password-missing = Enter your current password and a new one.
settings-password-wrong = Your current password is not correct.
settings-question = Secret question
settings-question-yours = Your question: { $question }
settings-question-none = You have no secret question.
settings-question-hint = With it you can reset a forgotten password by answering it. It is weaker than the mailed link: choose an answer others cannot find out.
settings-question-change = Change or remove it
settings-question-choose = Choose a question
settings-question-saved = Your secret question is saved.
settings-question-removed = Your secret question is removed.

## The secret question

question-first-school = What was the name of your first school?
question-first-pet = What was the name of your first pet?
question-birth-city = In which city were you born?
question-childhood-friend = What is the first name of your best childhood friend?
question-first-street = In which street did you live as a child?
question-page-title = Secret question
question-page-intro = If you forget your password, you can reset it by answering this question. Choose an answer only you know: not something others can find out or guess. Upper and lower case do not matter.
question-label = Question
answer-label = Answer
question-save = Save
question-remove = Remove my secret question
question-missing = Enter an answer and your current password.

## Mail the relay sends (plain text)

mail-recovery-subject = Reset your password
mail-recovery-body =
    Hello { $name },

    someone, probably you, asked to reset the password of your account.
    To choose a new one, open this link within { $minutes } minutes:

    {"    "}{ $link }

    The link works once. If you did not ask for it, ignore this mail: your password
    stays as it is.

mail-alert-confirm-subject = Confirm your alert address
mail-alert-confirm-body =
    Hello { $name },

    someone, probably you, asked for new-mail alerts to be sent to this address.
    To confirm, open this link within 24 hours and press the button:

    {"    "}{ $link }

    If you did not ask for it, ignore this mail: no alert comes here.

## Alert address confirmation

alert-confirm-title = Confirm your alert address
alert-confirm-intro = Press the button to receive your new-mail alerts at this address.
alert-confirm-submit = Confirm
alert-confirm-done-title = Alert address confirmed
alert-confirm-done = New-mail alerts now go to { $address }.
alert-confirm-invalid-title = Link not valid
alert-confirm-invalid = This confirmation link is unknown, was replaced by a newer one, or is more than 24 hours old. Enter the address on the alerts page again to get a new link.

## Password recovery

recover-title = Reset your password
recover-intro = Enter the e-mail address or mobile number of your account. We send a link to its contact address.
recover-send = Send the link
recover-by-question = Answer your secret question instead
recover-by-question-where = (where your organisation offers it and you chose a question in your settings).
recover-no-way = If no way works, ask your administrator to reset your password.
recover-login-missing = Enter your e-mail address or mobile number.
recover-sent-title = Check your mail
recover-sent = If an account with this address or number exists, we sent a link to its contact address. The link works once, within 15 minutes.
recover-back = Back to sign-in
recover-question-title = Answer your secret question
recover-question-intro = Choose the question you picked in your settings and answer it. Upper and lower case do not matter.
recover-question-yours = Your question
recover-answer-yours = Your answer
recover-continue = Continue
recover-other-ways = Other ways to reset your password
recover-question-missing = Enter your e-mail address or mobile number, choose your question and answer it.
recover-question-wrong = These details do not match an account that can be recovered this way. Check the question and the answer, or use another way.
reset-title = Choose a new password
reset-submit = Set the password
reset-invalid-title = This link cannot be used
reset-invalid = The link has expired or was used already. Ask for a new one.

## Browse access: mail, calendar and contacts from the enterprise server

nav-mail = Mail
nav-calendar = Calendar
nav-contacts = Contacts
page-newer = Newer
page-older = Older
page-position = { $first }–{ $last } of { $total }
mail-folders = Folders
mail-inbox = Inbox
mail-compose = New message
mail-empty = No messages in this folder.
mail-from = From
mail-to = To
mail-cc = Cc
mail-subject = Subject
mail-date = Date
mail-size = Size
mail-text = Message
mail-has-attachments = attachment
mail-no-sender = (no sender)
mail-no-subject = (no subject)
mail-no-text = This message has no text to show.
mail-attachments = Attachments
mail-back-to = Back to { $folder }
mail-reply = Reply
mail-forward = Forward
mail-delete = Delete
mail-move = Move
mail-move-to = Move to
mail-send = Send
mail-sent = The message was sent.
mail-deleted = The message was deleted.
mail-moved = The message was moved.
mail-no-recipient = Enter at least one recipient.
mail-send-refused = The message was not sent: { $reason }
mail-quote-intro = On { $when }, { $from } wrote:
mail-forwarded = ---------- Forwarded message ----------
mail-forward-attachments = The attachments go along: { $names }
calendar-title = Calendar
calendar-week-of = Week of { $day }
calendar-all-day = All day
calendar-no-title = (no title)
calendar-nothing = Nothing planned.
calendar-today = Today
calendar-previous-day = Previous day
calendar-next-day = Next day
calendar-previous-week = Previous week
calendar-next-week = Next week
calendar-day-view = Day
calendar-week-view = Week
calendar-monday = Monday
calendar-tuesday = Tuesday
calendar-wednesday = Wednesday
calendar-thursday = Thursday
calendar-friday = Friday
calendar-saturday = Saturday
calendar-sunday = Sunday
contacts-title = Contacts
contacts-search = Search
contacts-none = No contacts found.
contacts-no-name = (no name)
contacts-add = Add contact
contacts-name = Name
contacts-phone = Phone
contacts-organization = Organization
contacts-back = Back to contacts
contacts-name-needed = Enter a name.
contacts-refused = The contact was not added: { $reason }
browse-not-allowed-title = Not available
browse-not-allowed = Access to your mail, calendar and contacts from this kind of browser is not enabled for your account. Ask your administrator.
browse-offline-title = Enterprise server not connected
browse-offline = Your enterprise server is not connected to the service right now. Try again in a few minutes.
browse-unsupported-title = Not offered
browse-unsupported = Your enterprise server does not offer access to your mail from a browser.
browse-timeout-title = No answer
browse-timeout = Your enterprise server did not answer in time. Try again; if it keeps happening, tell your administrator.
browse-busy = Your enterprise server is busy. Try again in a moment.
browse-not-found = This message, folder or contact does not exist (any more).
browse-refused-title = Not done
browse-refused = Your enterprise server refused this request.
browse-source-title = Mailbox not available
browse-source = Your enterprise server could not read your mailbox, calendar or contacts right now. Try again later.
browse-too-large-title = Too large to show
browse-too-large = This message or attachment is too large to show here. Open it in your usual mail program.
browse-internal-title = Unexpected answer
browse-internal = Your enterprise server's answer could not be shown.
contacts-count = { $n ->
    [one] One contact
   *[other] { $n } contacts
}
pda-pc-version = PC version
pda-previous = Previous
pda-next = Next
pda-back = Back

## Where alerts go

alerts-title = Alerts
alerts-intro = When a new mail matches one of your alert rules (on the settings page), you are told here. Nothing is sent while no destination is set.
alerts-email = Send alerts to this e-mail address
alerts-webhook = Post alerts to this HTTPS address (webhook)
alerts-webhook-key = Each post is signed (HMAC-SHA256, header X-Noc-Signature) with this key:
alerts-new-key = Make a new key
alerts-excerpt = Include the first words of the mail
alerts-quiet = Quiet hours (no alerts), in your time zone
alerts-quiet-from = From
alerts-quiet-to = To
alerts-quiet-none = —
alerts-save = Save
alerts-saved = Your alert destinations are saved.
alerts-confirm-sent = Your alert destinations are saved. We sent a confirmation link to { $address }; alerts go there once you follow it.
alerts-pending = Waiting for confirmation: { $address } (see the link we mailed there).
alerts-pending-current = Until then alerts go to { $address }.
alerts-mail-unavailable = This service sends no mail, so alerts cannot go to an e-mail address here.
alerts-rules-link = Which mail makes an alert: the rules on the settings page
nav-alerts = Alerts
problem-alert-email = Alerts go to an e-mail address.
problem-alert-email-rationed = At most { $max } confirmation mails a day: try again tomorrow.
problem-webhook-url = A webhook is an https:// address.
problem-quiet-hours = Choose both hours of the quiet time, or neither.
alerts-sms = Send alerts by SMS to my mobile number
alerts-wap-push = Send alerts as WAP Push to my mobile number (opens the WAP inbox)
